"""Prometheus metrics: one histogram per stage, counters by outcome, the model's life cycle.

Each ``Metrics`` owns its registry (no process-global default registry), so two apps in one
test process do not collide and nothing is registered at import.
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder

STAGES = ("fetch", "decode", "preprocess", "predict")
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SCORES = (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class BoundedLabel:
    """Label values a caller chooses, at most ``limit`` distinct ones; later newcomers share
    ``"other"``. A metric keeps every label set it has seen for the life of the process, so a
    sender that picks a fresh event source or type each time must not be able to grow it (and
    every scrape) without end."""

    OTHER = "other"

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return self.OTHER


class Metrics:
    def __init__(self) -> None:
        # ``*_created`` series double the exposition for no operational use.
        disable_created_metrics()
        r = self.registry = CollectorRegistry()
        # The process's own health (resident memory, open fds, CPU seconds, garbage
        # collections, Python version) next to ours: the usual process_* and python_* series.
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)
        self.requests = Counter(
            "nsfwoid_requests",
            "Scoring requests by input kind and outcome (an error code or ok).",
            ["input", "outcome"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "nsfwoid_request_seconds",
            "Whole scoring request latency.",
            ["input"],
            buckets=_LATENCY,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "nsfwoid_stage_seconds",
            "Latency of each stage of an image's path.",
            ["stage"],
            buckets=_LATENCY,
            registry=r,
        )
        self.fetched_bytes = Counter(
            "nsfwoid_fetched_bytes", "Decoded bytes of images fetched by URL.", registry=r
        )
        self.scores = Histogram(
            "nsfwoid_score", "NSFW scores returned.", buckets=_SCORES, registry=r
        )
        self.batch_size = Histogram(
            "nsfwoid_batch_size",
            "Images per model invocation (micro-batching).",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=r,
        )
        self.inference_runs = Counter(
            "nsfwoid_inference_runs",
            "Model invocations, by whether their one request was alone in the process "
            "(an alone run may spend CPU on latency: NSFWOID_INFERENCE_SPIN).",
            ["alone"],
            registry=r,
        )
        self.in_flight = Gauge(
            "nsfwoid_in_flight_requests", "Scoring requests being processed.", registry=r
        )
        self.rejected = Counter(
            "nsfwoid_rejected_requests",
            "Requests refused by admission control or the deadline.",
            ["reason"],
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "nsfwoid_model_load_seconds", "Seconds to load the model.", registry=r
        )
        self.model_warmup_seconds = Gauge(
            "nsfwoid_model_warmup_seconds", "Seconds of the warm-up inference.", registry=r
        )
        self.model_info = Gauge(
            "nsfwoid_model_info",
            "The model being served (value 1).",
            ["name", "version", "runtime", "sha256"],
            registry=r,
        )
        self.ready = Gauge("nsfwoid_ready", "1 when the readiness probe passes.", registry=r)
        # Event id is per delivery: a label would explode cardinality, so it rides along as
        # an OpenMetrics exemplar while type and source are labels.
        self.events = Counter(
            "nsfwoid_events",
            "CloudEvents received, by type, source and outcome (the first 64 sources and 16 "
            "types seen are named, later ones count as 'other').",
            ["type", "source", "outcome"],
            registry=r,
        )
        self._event_types = BoundedLabel(16)
        self._event_sources = BoundedLabel(64)
        self.event_duplicates = Counter(
            "nsfwoid_event_duplicates", "Repeat deliveries answered from the cache.", registry=r
        )

    def event(self, type_: str, source: str, outcome: str) -> Counter:
        """The events counter for one event's type, source and outcome."""
        return self.events.labels(self._event_types(type_), self._event_sources(source), outcome)

    def render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
