"""Configuration: read once from the environment into one frozen object, then passed in.

Nothing on the request path reads ``os.environ``; a bad value fails at start-up with an error
that names the variable (as Starlette's ``Config`` does), not on the first request.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from function.wikimedia.filerepo import STANDARD_WIDTHS

T = TypeVar("T")

PREFIX = "NSFWOID_"
PREPROCESSING_MODES = ("standard", "reference")
RUNTIMES = ("litert", "onnxruntime", "tensorflow")
DEFAULT_USER_AGENT = (
    "nsfwoid/1.0 (open_nsfw image scorer; https://github.com/nsfwoid/nsfwoid) python-requests"
)
REPO_ROOT = Path(__file__).resolve().parent.parent


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


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(f"must be > 0, got {value}")
    return value


def _bytes(raw: str) -> int:
    """A byte count: plain digits, or with a Ki/Mi/Gi suffix as Kubernetes writes them."""
    text = raw.strip()
    for suffix, scale in (("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)):
        if text.endswith(suffix):
            return _positive_int(text[: -len(suffix)]) * scale
    return _positive_int(text)


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"must be >= 0, got {raw!r}")
    return value


def _positive_float(raw: str) -> float:
    value = _non_negative_float(raw)
    if value == 0:
        raise ValueError("must be > 0")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _hosts(raw: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().lower().rstrip(".") for h in raw.split(",") if h.strip())
    for host in hosts:
        if host.startswith("*") and not host.startswith("*."):
            raise ValueError(f"wildcards must look like '*.example.org', got {host!r}")
    return hosts


def _base_url(raw: str) -> str:
    url = raw.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if scheme.lower() not in ("http", "https") or not sep or not rest or "?" in rest:
        raise ValueError(f"expected an http(s) base URL, got {raw!r}")
    return url


def _wiki_urls(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        wiki, sep, url = item.partition("=")
        if not sep or not wiki.strip():
            raise ValueError(f"expected wiki=URL pairs, got {item!r}")
        pairs.append((wiki.strip(), _base_url(url)))
    return tuple(pairs)


def _thumb_width(raw: str) -> int:
    value = int(raw)
    if value not in STANDARD_WIDTHS:
        widths = ", ".join(map(str, STANDARD_WIDTHS))
        raise ValueError(f"must be one of Wikimedia's standard widths ({widths}), got {value}")
    return value


def _exact_hosts(raw: str) -> tuple[str, ...]:
    hosts = _hosts(raw)
    for host in hosts:
        if "*" in host:
            raise ValueError(f"exact host names only (no wildcards), got {host!r}")
    return hosts


@dataclass(frozen=True)
class Settings:
    """Every knob of the service, each documented where it is defined."""

    port: int = 8080
    preprocessing: str = "standard"
    runtime: str = "onnxruntime"
    model_dir: Path = REPO_ROOT / "model"
    max_body_bytes: int = 25 * 1024 * 1024
    max_fetch_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 50_000_000
    decode_memory_bytes: int | None = None
    """Bytes that decodes in flight may hold together (``NSFWOID_DECODE_MEMORY_BYTES``, digits
    or e.g. ``600Mi``). A decode reserves its image's full-size decoded bytes (4 per pixel)
    before decoding and waits, up to the request deadline (then 503), while others hold the
    rest; an image that alone needs more is refused (422 ``image_too_large``). Unset: the
    container's memory limit (cgroup v2 ``memory.max``, else the machine's memory) less
    512 MiB for the runtime, model and request bodies (``function/budget.py``)."""
    max_batch_urls: int = 16
    max_frames: int = 8
    fetch_connect_timeout: float = 3.05
    fetch_read_timeout: float = 10.0
    fetch_deadline: float = 15.0
    max_redirects: int = 5
    max_url_length: int = 2048
    user_agent: str = DEFAULT_USER_AGENT
    allowed_hosts: tuple[str, ...] = ()
    # Every fetched name must resolve to public addresses only (the SSRF guard), unless it is
    # one of ``private_hosts`` (exact names, for internal services) or this is set, which lets
    # every name reach private networks (a test or an isolated network).
    allow_private_networks: bool = False
    private_hosts: tuple[str, ...] = ()
    # A PEM bundle that fetches verify TLS against instead of certifi's (internal endpoints
    # signed by an internal CA). The environment's REQUESTS_CA_BUNDLE is deliberately not read:
    # the fetch session ignores the environment so that no proxy variable bypasses the guard.
    ca_bundle: Path | None = None
    request_deadline: float = 30.0
    body_timeout: float = 10.0
    max_in_flight: int = 16
    # Seconds between SIGTERM and closing the listener, while readiness answers 503 and
    # requests are still served: plain Kubernetes removes the pod from its Service's endpoints
    # only after a failed readiness probe, and a request routed meanwhile must not find the
    # port closed. (Knative's queue-proxy drains on its own; 0 turns the delay off.)
    drain_seconds: float = 5.0
    inference_threads: int = field(default_factory=lambda: min(4, available_cpus()))
    inference_spin: bool = True
    batch_max: int = 8
    batch_wait_ms: float = 0.0
    event_type: str = "org.nsfwoid.image.scored"
    event_cache_size: int = 1024
    event_cache_bytes: int = 8 * 1024 * 1024
    log_level: str = "INFO"
    # Wikimedia upload events (function/doors/uploads.py).
    upload_base_url: str = "https://upload.wikimedia.org"
    """Where originals (and, unless a wiki has its own, thumbnails) of uploads are fetched."""
    thumb_base_urls: tuple[tuple[str, str], ...] = ()
    """Per-wiki thumbnail hosts, ``NSFWOID_THUMB_BASE_URLS=commonswiki=https://…,enwiki=…``."""
    thumb_width: int = 500
    """Width of the thumbnail scored when the original is too large or not a raster; one of
    Wikimedia's standard widths (others are not cached and load the thumbnailers)."""
    score_rendered_media: bool = False
    """Also score PDF and DjVu uploads (their first page) and videos (their poster frame)."""
    upload_page_change: bool = False
    """Also take ``mediawiki.page_change`` creates of File pages (no hash to verify against)."""
    failed_event_type: str = "org.nsfwoid.image.failed"
    """CloudEvent type of the reply to an upload that can never be scored."""
    service_name: str = "nsfwoid"
    revision: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from a mapping (``os.environ`` in production, a dict in tests)."""
        values: dict[str, object] = {}

        def take(name: str, key: str, parse: Callable[[str], T]) -> None:
            raw = environ.get(name)
            if raw is None or raw == "":
                return
            try:
                values[key] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}", name) from exc

        take("PORT", "port", _positive_int)
        take(PREFIX + "PREPROCESSING", "preprocessing", _choice(PREPROCESSING_MODES))
        take(PREFIX + "RUNTIME", "runtime", _choice(RUNTIMES))
        take(PREFIX + "MODEL_DIR", "model_dir", Path)
        take(PREFIX + "MAX_BODY_BYTES", "max_body_bytes", _positive_int)
        take(PREFIX + "MAX_FETCH_BYTES", "max_fetch_bytes", _positive_int)
        take(PREFIX + "MAX_PIXELS", "max_pixels", _positive_int)
        take(PREFIX + "DECODE_MEMORY_BYTES", "decode_memory_bytes", _bytes)
        take(PREFIX + "MAX_BATCH_URLS", "max_batch_urls", _positive_int)
        take(PREFIX + "MAX_FRAMES", "max_frames", _positive_int)
        take(PREFIX + "FETCH_CONNECT_TIMEOUT", "fetch_connect_timeout", _positive_float)
        take(PREFIX + "FETCH_READ_TIMEOUT", "fetch_read_timeout", _positive_float)
        take(PREFIX + "FETCH_DEADLINE", "fetch_deadline", _positive_float)
        take(PREFIX + "MAX_REDIRECTS", "max_redirects", int)
        take(PREFIX + "MAX_URL_LENGTH", "max_url_length", _positive_int)
        take(PREFIX + "USER_AGENT", "user_agent", str.strip)
        take(PREFIX + "ALLOWED_HOSTS", "allowed_hosts", _hosts)
        take(PREFIX + "ALLOW_PRIVATE_NETWORKS", "allow_private_networks", _bool)
        take(PREFIX + "PRIVATE_HOSTS", "private_hosts", _exact_hosts)
        take(PREFIX + "CA_BUNDLE", "ca_bundle", Path)
        take(PREFIX + "REQUEST_DEADLINE", "request_deadline", _positive_float)
        take(PREFIX + "BODY_TIMEOUT", "body_timeout", _positive_float)
        take(PREFIX + "MAX_IN_FLIGHT", "max_in_flight", _positive_int)
        take(PREFIX + "DRAIN_SECONDS", "drain_seconds", _non_negative_float)
        take(PREFIX + "INFERENCE_THREADS", "inference_threads", _positive_int)
        take(PREFIX + "INFERENCE_SPIN", "inference_spin", _bool)
        take(PREFIX + "BATCH_MAX", "batch_max", _positive_int)
        take(PREFIX + "BATCH_WAIT_MS", "batch_wait_ms", _non_negative_float)
        take(PREFIX + "EVENT_TYPE", "event_type", str.strip)
        take(PREFIX + "EVENT_CACHE_SIZE", "event_cache_size", int)
        take(PREFIX + "EVENT_CACHE_BYTES", "event_cache_bytes", _positive_int)
        take(PREFIX + "UPLOAD_BASE_URL", "upload_base_url", _base_url)
        take(PREFIX + "THUMB_BASE_URLS", "thumb_base_urls", _wiki_urls)
        take(PREFIX + "THUMB_WIDTH", "thumb_width", _thumb_width)
        take(PREFIX + "SCORE_RENDERED_MEDIA", "score_rendered_media", _bool)
        take(PREFIX + "UPLOAD_PAGE_CHANGE", "upload_page_change", _bool)
        take(PREFIX + "FAILED_EVENT_TYPE", "failed_event_type", str.strip)
        take(PREFIX + "LOG_LEVEL", "log_level", _choice(("debug", "info", "warning", "error")))
        take("K_SERVICE", "service_name", str.strip)
        take("K_REVISION", "revision", str.strip)
        if "log_level" in values:
            values["log_level"] = str(values["log_level"]).upper()
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.max_redirects < 0:
            raise ConfigError(f"{PREFIX}MAX_REDIRECTS: must be >= 0", PREFIX + "MAX_REDIRECTS")
        return settings

    @property
    def event_source(self) -> str:
        """CloudEvent ``source`` of replies: the Knative service/revision when known."""
        if self.revision:
            return f"/{self.service_name}/{self.revision}"
        return f"/{self.service_name}"
