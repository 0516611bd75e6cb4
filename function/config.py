"""Configuration: read once from the environment into one frozen object, then passed in.

Each field of ``Settings`` says where it is defined which variable sets it, how its text is
parsed and what it means; ``from_env`` reads them all from that, and ``docs/configuration.md``
is generated from it (``make docs``). Nothing on the request path reads ``os.environ``; a bad
value fails at start-up with an error that names the variable (as Starlette's ``Config``
does), not on the first request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from function.config_values import (
    base_url,
    boolean,
    byte_count,
    choice,
    exact_hosts,
    hosts,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    standard_thumb_width,
    stripped,
    wiki_urls,
)

T = TypeVar("T")

PREFIX = "NSFWOID_"
PREPROCESSING_MODES = ("standard", "reference")
RUNTIMES = ("litert", "onnxruntime", "tensorflow")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_USER_AGENT = (
    "nsfwoid/1.0 (open_nsfw image scorer; https://github.com/nsfwoid/nsfwoid) python-requests"
)
REPO_ROOT = Path(__file__).resolve().parent.parent

# Sections of docs/configuration.md, in this order.
SERVING = "Serving"
INPUTS = "Inputs and limits"
FETCHING = "Fetching"
EVENTS = "Events and uploads"
MODEL = "Model and inference"
LOGGING = "Logging"
GROUPS = (SERVING, INPUTS, FETCHING, EVENTS, MODEL, LOGGING)


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""

    def __init__(self, message: str, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota if any.

    ``os.cpu_count()`` is the node's count: a pod limited to 2 CPUs on a 64-core node would
    start 64 inference threads that the quota then throttles.
    """
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = count or 1
    try:
        quota, period = cgroup.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota visible: the affinity is the limit
    return cpus


def _log_level(raw: str) -> str:
    return choice(LOG_LEVELS)(raw).upper()


@dataclass(frozen=True)
class Variable:
    """How one setting is read from the environment and documented."""

    env: str
    parse: Callable[[str], Any]
    doc: str
    group: str
    shown_default: str | None = None
    """The default as the docs show it (markdown), where the value depends on the machine."""


def variable(
    *,
    env: str,
    parse: Callable[[str], Any],
    doc: str,
    group: str,
    shown_default: str | None = None,
) -> dict[str, Variable]:
    """Field metadata for a setting whose default is computed (``default_factory``)."""
    return {"variable": Variable(env, parse, " ".join(doc.split()), group, shown_default)}


def setting(
    default: T,
    *,
    env: str,
    parse: Callable[[str], T],
    doc: str,
    group: str,
    shown_default: str | None = None,
) -> T:
    """A settings field: its default, the variable that sets it, its parser and its meaning."""
    meta = variable(env=env, parse=parse, doc=doc, group=group, shown_default=shown_default)
    return field(default=default, metadata=meta)


MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Every knob of the service, each documented where it is defined."""

    # Serving
    port: int = setting(
        8080, env="PORT", parse=positive_int, group=SERVING, doc="listening port (Knative sets it)"
    )
    max_in_flight: int = setting(
        16,
        env="NSFWOID_MAX_IN_FLIGHT",
        parse=positive_int,
        group=SERVING,
        doc="""scoring requests processed at once; beyond that → 503 `overloaded` with
        `Retry-After`, never a queue""",
    )
    request_deadline: float = setting(
        30.0,
        env="NSFWOID_REQUEST_DEADLINE",
        parse=positive_float,
        group=SERVING,
        doc="""seconds for a whole scoring request → 504 `deadline_exceeded` (keep it below
        Knative's `timeoutSeconds`, 60 in `knative/`)""",
    )
    body_timeout: float = setting(
        10.0,
        env="NSFWOID_BODY_TIMEOUT",
        parse=positive_float,
        group=SERVING,
        doc="""seconds for the request body to arrive → 408 `request_timeout`; the body is read
        before a scoring slot is taken, so a client trickling it never holds a slot""",
    )
    drain_seconds: float = setting(
        5.0,
        env="NSFWOID_DRAIN_SECONDS",
        parse=non_negative_float,
        group=SERVING,
        doc="""after SIGTERM, seconds during which readiness answers 503 while requests are still
        accepted and served, then gunicorn's graceful shutdown: plain Kubernetes takes a pod
        out of its Service's endpoints only after a failed readiness probe, and a request
        routed meanwhile must not find the port closed (Knative's queue-proxy drains on its
        own); `0` stops accepting at once""",
    )
    service_name: str = setting(
        "nsfwoid",
        env="K_SERVICE",
        parse=stripped,
        group=SERVING,
        doc="Knative service name (set by Knative); reply events' `source` is `/<K_SERVICE>`",
    )
    revision: str = setting(
        "",
        env="K_REVISION",
        parse=stripped,
        group=SERVING,
        doc="""Knative revision (set by Knative); when set, reply events' `source` is
        `/<K_SERVICE>/<K_REVISION>`""",
    )

    # Inputs and limits
    preprocessing: str = setting(
        "standard",
        env="NSFWOID_PREPROCESSING",
        parse=choice(PREPROCESSING_MODES),
        group=INPUTS,
        doc="""default preprocessing, `standard` or `reference` (Yahoo's exact pipeline); per
        request: `?preprocessing=`""",
    )
    max_body_bytes: int = setting(
        25 * MIB,
        env="NSFWOID_MAX_BODY_BYTES",
        parse=positive_int,
        group=INPUTS,
        doc="request body cap (raw, multipart, events) → 413 `payload_too_large`",
    )
    max_fetch_bytes: int = setting(
        25 * MIB,
        env="NSFWOID_MAX_FETCH_BYTES",
        parse=positive_int,
        group=INPUTS,
        doc="fetched image cap, counted decoded while streaming → 422 `source_too_large`",
    )
    max_pixels: int = setting(
        50_000_000,
        env="NSFWOID_MAX_PIXELS",
        parse=positive_int,
        group=INPUTS,
        doc="""pixel cap, checked from the header before decoding and summed over decoded frames
        → 422 `image_too_large`""",
    )
    decode_memory_bytes: int | None = setting(
        None,
        env="NSFWOID_DECODE_MEMORY_BYTES",
        parse=byte_count,
        group=INPUTS,
        shown_default="*(the memory limit less 512 MiB)*",
        doc="""bytes that decodes in flight may hold together, digits or e.g. `600Mi`: a decode
        reserves its image's full-size decoded bytes (4 per pixel) before decoding and waits,
        up to the request deadline (then 503), while others hold the rest; an image that alone
        needs more is refused → 422 `image_too_large`. The default depends on the machine: the
        container's memory limit (cgroup v2 `memory.max`, else the machine's memory) less
        512 MiB for the runtime, model and request bodies (`function/budget.py`)""",
    )
    max_batch_urls: int = setting(
        16,
        env="NSFWOID_MAX_BATCH_URLS",
        parse=positive_int,
        group=INPUTS,
        doc='most URLs in one `{"urls": [...]}` request',
    )
    max_frames: int = setting(
        8,
        env="NSFWOID_MAX_FRAMES",
        parse=positive_int,
        group=INPUTS,
        doc="most frames scored in an animation (evenly spaced)",
    )
    max_url_length: int = setting(
        2048,
        env="NSFWOID_MAX_URL_LENGTH",
        parse=positive_int,
        group=INPUTS,
        doc="longer URLs are refused → 422 `source_not_allowed`",
    )

    # Fetching
    fetch_connect_timeout: float = setting(
        3.05,
        env="NSFWOID_FETCH_CONNECT_TIMEOUT",
        parse=positive_float,
        group=FETCHING,
        doc="seconds to connect to the image host",
    )
    fetch_read_timeout: float = setting(
        10.0,
        env="NSFWOID_FETCH_READ_TIMEOUT",
        parse=positive_float,
        group=FETCHING,
        doc="seconds between bytes from the image host",
    )
    fetch_deadline: float = setting(
        15.0,
        env="NSFWOID_FETCH_DEADLINE",
        parse=positive_float,
        group=FETCHING,
        doc="wall-clock seconds for a whole fetch, redirects included → 504 `source_timeout`",
    )
    max_redirects: int = setting(
        5,
        env="NSFWOID_MAX_REDIRECTS",
        parse=non_negative_int,
        group=FETCHING,
        doc="redirects followed, each hop checked again → 422 `too_many_redirects`",
    )
    user_agent: str = setting(
        DEFAULT_USER_AGENT,
        env="NSFWOID_USER_AGENT",
        parse=stripped,
        group=FETCHING,
        doc="""sent to image hosts; Wikimedia rate-limits anonymous agents, so put a contact
        (a URL or an e-mail address) here""",
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        env="NSFWOID_ALLOWED_HOSTS",
        parse=hosts,
        group=FETCHING,
        doc="""comma-separated exact hosts or `*.suffix` wildcards that URLs may name; empty:
        any public host""",
    )
    allow_private_networks: bool = setting(
        False,
        env="NSFWOID_ALLOW_PRIVATE_NETWORKS",
        parse=boolean,
        group=FETCHING,
        doc="""let every fetched name reach private, loopback and link-local addresses (a test
        or an isolated network; logged as a warning); otherwise each name must resolve to
        public addresses only, unless it is one of `NSFWOID_PRIVATE_HOSTS`""",
    )
    private_hosts: tuple[str, ...] = setting(
        (),
        env="NSFWOID_PRIVATE_HOSTS",
        parse=exact_hosts,
        group=FETCHING,
        doc="""comma-separated exact host names (internal services) that may resolve to private
        addresses; every other name stays held to public ones""",
    )
    ca_bundle: Path | None = setting(
        None,
        env="NSFWOID_CA_BUNDLE",
        parse=Path,
        group=FETCHING,
        shown_default="*(certifi's)*",
        doc="""PEM file that fetches verify TLS against (an internal CA); the path as written
        (a manifest names the production host's), and the service refuses to start when the
        file is missing;
        `REQUESTS_CA_BUNDLE` is deliberately not read: fetches ignore the environment, so that
        no proxy variable bypasses the address guard""",
    )

    # Events and uploads
    event_type: str = setting(
        "org.nsfwoid.image.scored",
        env="NSFWOID_EVENT_TYPE",
        parse=stripped,
        group=EVENTS,
        doc="CloudEvent type of replies carrying a score",
    )
    event_cache_size: int = setting(
        1024,
        env="NSFWOID_EVENT_CACHE_SIZE",
        parse=int,
        group=EVENTS,
        doc="""replies remembered per process for duplicate deliveries (by `source` and `id`);
        `0` turns the cache off""",
    )
    event_cache_bytes: int = setting(
        8 * MIB,
        env="NSFWOID_EVENT_CACHE_BYTES",
        parse=positive_int,
        group=EVENTS,
        doc="bytes those remembered replies may hold; the oldest are dropped beyond it",
    )
    failed_event_type: str = setting(
        "org.nsfwoid.image.failed",
        env="NSFWOID_FAILED_EVENT_TYPE",
        parse=stripped,
        group=EVENTS,
        doc="CloudEvent type of the reply to a Wikimedia upload that can never be scored",
    )
    upload_base_url: str = setting(
        "https://upload.wikimedia.org",
        env="NSFWOID_UPLOAD_BASE_URL",
        parse=base_url,
        group=EVENTS,
        doc="""where originals (and, unless a wiki has its own, thumbnails) of Wikimedia
        uploads are fetched (`docs/events.md`)""",
    )
    thumb_base_urls: tuple[tuple[str, str], ...] = setting(
        (),
        env="NSFWOID_THUMB_BASE_URLS",
        parse=wiki_urls,
        group=EVENTS,
        doc="per-wiki thumbnail hosts, `commonswiki=https://…,enwiki=https://…`",
    )
    thumb_width: int = setting(
        500,
        env="NSFWOID_THUMB_WIDTH",
        parse=standard_thumb_width,
        group=EVENTS,
        doc="""width of the thumbnail scored when the original is too large or not a raster;
        one of Wikimedia's standard widths (others are not cached and load the thumbnailers)""",
    )
    score_rendered_media: bool = setting(
        False,
        env="NSFWOID_SCORE_RENDERED_MEDIA",
        parse=boolean,
        group=EVENTS,
        doc="""also score PDF and DjVu uploads (their first page) and videos (their poster
        frame), from their thumbnails""",
    )
    upload_page_change: bool = setting(
        False,
        env="NSFWOID_UPLOAD_PAGE_CHANGE",
        parse=boolean,
        group=EVENTS,
        doc="""also take `mediawiki.page_change` creates of File pages (no hash to verify
        against)""",
    )

    # Model and inference
    runtime: str = setting(
        "onnxruntime",
        env="NSFWOID_RUNTIME",
        parse=choice(RUNTIMES),
        group=MODEL,
        doc="""`onnxruntime` (our ONNX export on MLAS: the fastest, see `docs/performance.md`),
        `litert` (the `.tflite` on XNNPACK) or `tensorflow` (the canonical SavedModel; needs
        TensorFlow installed)""",
    )
    model_dir: Path = setting(
        REPO_ROOT / "model",
        env="NSFWOID_MODEL_DIR",
        parse=Path,
        group=MODEL,
        shown_default="`<repo>/model`",
        doc="folder with `manifest.json` and the model artefacts",
    )
    inference_threads: int = field(
        default_factory=lambda: min(4, available_cpus()),
        metadata=variable(
            env="NSFWOID_INFERENCE_THREADS",
            parse=positive_int,
            group=MODEL,
            shown_default="*(CPUs available, at most 4)*",
            doc="""threads of the inference runtime; the default depends on the machine: the
            CPUs this process may use (its affinity, capped by a cgroup CPU quota), at most 4""",
        ),
    )
    inference_spin: bool = setting(
        True,
        env="NSFWOID_INFERENCE_SPIN",
        parse=boolean,
        group=MODEL,
        doc="""a request scored while no other is in flight runs on onnxruntime threads that
        keep spinning between runs (a second session, ~30 MiB): less latency when the next lone
        request comes soon after, for more CPU per sparse request (`docs/performance.md`); with
        other requests in flight runs never spin, so load is unaffected; `false`: one
        never-spinning session""",
    )
    batch_max: int = setting(
        8,
        env="NSFWOID_BATCH_MAX",
        parse=positive_int,
        group=MODEL,
        doc="most images in one model invocation (micro-batching)",
    )
    batch_wait_ms: float = setting(
        0.0,
        env="NSFWOID_BATCH_WAIT_MS",
        parse=non_negative_float,
        group=MODEL,
        doc="extra milliseconds to wait for a batch to fill; `0`: batch whatever is queued",
    )

    # Logging
    log_level: str = setting(
        "INFO",
        env="NSFWOID_LOG_LEVEL",
        parse=_log_level,
        group=LOGGING,
        doc="`debug`, `info`, `warning` or `error` (any case)",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from a mapping (``os.environ`` in production, a dict in tests).

        An unset or empty variable keeps the field's default.
        """
        values: dict[str, Any] = {}
        for name, var in variables().items():
            raw = environ.get(var.env)
            if raw is None or raw == "":
                continue
            try:
                values[name] = var.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{var.env}: {exc}", var.env) from exc
        return cls(**values)

    @property
    def event_source(self) -> str:
        """CloudEvent ``source`` of replies: the Knative service/revision when known."""
        if self.revision:
            return f"/{self.service_name}/{self.revision}"
        return f"/{self.service_name}"


def variables() -> dict[str, Variable]:
    """Each setting's field name and how it is read, in the order the fields are defined."""
    return {f.name: f.metadata["variable"] for f in fields(Settings)}
