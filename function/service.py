"""The service's life cycle and shared state: settings, model, batcher, fetcher, metrics.

Created cheaply at import of the entry point; ``start`` (called in the serving process,
after gunicorn's fork) loads the model in a background thread so liveness answers at once
and readiness turns 200 only after the warm-up inference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from function.batcher import Batcher
from function.config import Settings
from function.decode import configure_pillow
from function.errors import Overloaded
from function.events import EventCache
from function.fetch import Fetcher
from function.logs import configure_logging, log
from function.metrics import Metrics
from function.model import Model
from function.pipeline import Pipeline

logger = logging.getLogger("nsfwoid")


class Service:
    def __init__(self, settings: Settings, model: Model | None = None) -> None:
        """``model``: the model to serve; by default the one ``settings`` name, not loaded yet
        (``start`` loads it). Tests whose point is not the score pass a stand-in."""
        self.settings = settings
        self.metrics = Metrics()
        self.model = model or Model(
            settings.model_dir,
            settings.runtime,
            settings.inference_threads,
            settings.inference_spin,
        )
        self.batcher = Batcher(
            self.model,
            max_batch=settings.batch_max,
            max_wait=settings.batch_wait_ms / 1000,
            on_batch=self._on_batch,
        )
        self.fetcher = Fetcher(settings)
        self.pipeline = Pipeline(settings, self.model, self.batcher, self.fetcher, self.metrics)
        self.event_cache = EventCache(settings.event_cache_size, settings.event_cache_bytes)
        self.started_at = time.monotonic()
        self.load_error: str | None = None
        self._free_slots = settings.max_in_flight
        self._slots_lock = threading.Lock()
        self._draining = threading.Event()
        self._start_lock = threading.Lock()
        self._loader: threading.Thread | None = None

    def _on_batch(self, size: int, alone: bool, _seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.inference_runs.labels(str(alone).lower()).inc()

    @property
    def alive(self) -> bool:
        """False once the inference thread has died: no request can be scored again, so
        liveness fails and the platform restarts the container."""
        return self.batcher.alive

    @property
    def ready(self) -> bool:
        return self.model.ready and not self._draining.is_set() and self.alive

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def start(self, *, wait: bool = False) -> None:
        """Load and warm the model in the background (idempotent)."""
        with self._start_lock:
            if self._loader is None:
                if not logging.getLogger().handlers:  # run by functions-framework's own CLI
                    configure_logging(
                        self.settings.log_level, service_name=self.settings.service_name
                    )
                configure_pillow()
                if self.settings.allow_private_networks:
                    log(
                        logger,
                        logging.WARNING,
                        "NSFWOID_ALLOW_PRIVATE_NETWORKS is on: URL fetches may reach private, "
                        "loopback and link-local addresses. Never enable this in production.",
                        setting="NSFWOID_ALLOW_PRIVATE_NETWORKS",
                    )
                self._loader = threading.Thread(
                    target=self._load, name="nsfwoid-loader", daemon=True
                )
                self._loader.start()
        if wait:
            self._loader.join()

    def _load(self) -> None:
        try:
            self.model.load()
            self.batcher.start()
            self.model.warm_up()
        except Exception as exc:  # keep serving liveness; readiness reports the failure
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.exception("model failed to load", extra={"event.outcome": "failure"})
            return
        info = self.model.info
        assert info is not None
        self.metrics.model_load_seconds.set(self.model.load_seconds)
        self.metrics.model_warmup_seconds.set(self.model.warmup_seconds)
        self.metrics.model_info.labels(info.name, info.version, info.runtime, info.sha256).set(1)
        self.metrics.ready.set(1)
        log(
            logger,
            logging.INFO,
            "model ready",
            model_version=info.version,
            runtime=info.runtime,
            load_s=round(self.model.load_seconds, 3),
            warmup_s=round(self.model.warmup_seconds, 3),
            since_start_s=round(time.monotonic() - self.started_at, 3),
        )

    def begin_shutdown(self) -> None:
        """SIGTERM: readiness turns 503 at once; requests in flight carry on."""
        if not self._draining.is_set():
            self._draining.set()
            self.metrics.ready.set(0)
            log(
                logger,
                logging.INFO,
                "draining: readiness now 503",
                drain_s=self.settings.drain_seconds,
            )

    def stop(self) -> None:
        self.begin_shutdown()
        self.batcher.stop()
        self.fetcher.close()

    @contextmanager
    def admitted(self, weight: int = 1) -> Iterator[None]:
        """At most ``max_in_flight`` images being scored at once: a request takes one slot per
        image it scores (a batch of 10 URLs takes 10). Beyond that a fast 503, never a queue."""
        with self._slots_lock:
            admitted = weight <= self._free_slots
            if admitted:
                self._free_slots -= weight
        if not admitted:
            self.metrics.rejected.labels("overloaded").inc()
            raise Overloaded("too many requests in flight; retry shortly")
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.metrics.in_flight.dec()
            with self._slots_lock:
                self._free_slots += weight
