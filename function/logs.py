"""Log lines on stdout in ECS JSON (Elastic Common Schema), one object per line.

Formatting is ``ecs-logging``'s; this module adds what is ours: the request's context (a
``contextvars`` context, so any ``logging`` call made while serving a request carries its id),
our field names under their ECS names (our own facts under ``nsfwoid.*``), and the one line
per request. A scoring request's line is written by the app (:func:`log_request`), which
knows the score, the timings and the cause of a failure; every other request's line is
gunicorn's access line, in the same shape. Image bytes and full URLs never reach a log: a
fetched image is named by its host (``url.domain``) only, since a URL may carry a token.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import ecs_logging
from gunicorn.glogging import Logger as GunicornLogger

from function.errors import ScoringError

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "nsfwoid_log_context", default=None
)

# Our short names for facts that ECS has a field for; any other plain name goes under
# ``nsfwoid.``, and a dotted name is taken as already namespaced.
ECS_NAMES = {
    "request_id": "http.request.id",
    "source_host": "url.domain",
    "event_id": "nsfwoid.cloudevent.id",
    "event_source": "nsfwoid.cloudevent.source",
    "event_type": "nsfwoid.cloudevent.type",
    "duplicate": "nsfwoid.cloudevent.duplicate",
}
# Machine traffic at fixed intervals whose state the metrics and the start/drain lines
# already tell: logged at debug, or a probe every few seconds would bury the requests.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
LOGGED = "nsfwoid.logged"  # WSGI environ key: the app wrote this request's line
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s'\"?#]+)([^\s'\"]*)")
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_CAUSE_DEPTH = 16


def ecs_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` under their ECS names; ``None`` values left out."""
    named: dict[str, Any] = {}
    for key, value in fields.items():
        if value is not None:
            named[ECS_NAMES.get(key) or (key if "." in key else f"nsfwoid.{key}")] = value
    return named


def redact(text: str) -> str:
    """``text`` with every URL cut to its scheme and host (a path or query may hold a token)."""
    return _URL.sub(lambda match: match[1] + ("/…" if match[2] else ""), text)


class EcsFormatter(ecs_logging.StdlibFormatter):
    """ecs-logging's formatter, plus the request context and our service name."""

    def __init__(self, service_name: str = "nsfwoid") -> None:
        super().__init__(
            extra={"service.name": service_name},
            # log.original repeats message; process.name is always "MainProcess".
            exclude_fields=("log.original", "process.name"),
            ensure_ascii=False,
        )

    def format_to_ecs(self, record: logging.LogRecord) -> dict[str, Any]:
        result: dict[str, Any] = super().format_to_ecs(record)
        for name, value in ecs_fields(_context.get() or {}).items():
            _put_default(result, name.split("."), value)
        error = result.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            error["message"] = redact(error["message"])
        return result

    def format(self, record: logging.LogRecord) -> str:
        try:
            return super().format(record)
        except (TypeError, ValueError) as exc:
            # Two fields that collide ("a" and "a.b"): still one parseable line, never a
            # traceback on stderr from inside logging.
            fallback = logging.makeLogRecord(
                {
                    "name": record.name,
                    "levelno": record.levelno,
                    "levelname": record.levelname,
                    "msg": "%s",
                    "args": (record.getMessage(),),
                    "created": record.created,
                    "msecs": record.msecs,
                    "nsfwoid.log_error": str(exc),
                }
            )
            return super().format(fallback)


def _put_default(into: dict[str, Any], path: list[str], value: Any) -> None:
    """Set a nested field unless the record already has it (the record's own value wins)."""
    for part in path[:-1]:
        child = into.setdefault(part, {})
        if not isinstance(child, dict):
            return
        into = child
    into.setdefault(path[-1], value)


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, service_name: str = "nsfwoid"
) -> None:
    """Route every logger through one ECS JSON handler on stdout (called once, at start-up)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(EcsFormatter(service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # urllib3 logs each request's path and query at debug: a URL may carry a token.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))
    logging.captureWarnings(True)  # Python warnings as log lines, not bare text on stderr
    if threading.excepthook is threading.__excepthook__:  # not one a test runner installed
        threading.excepthook = _thread_excepthook  # a dying thread: a line, not bare stderr


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    name = args.thread.name if args.thread is not None else "unknown"
    logging.getLogger("nsfwoid").error(
        "uncaught exception in thread %s", name, exc_info=args.exc_value or False
    )


@contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Fields added to every log line inside the block; the yielded dict can be extended."""
    current = dict(_context.get() or {})
    current.update(fields)
    token = _context.set(current)
    try:
        yield current
    finally:
        _context.reset(token)


def log(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    logger.log(level, message, extra=ecs_fields(fields), stacklevel=2)  # origin: the caller


# --- the request line ---------------------------------------------------------------------
def request_fields(
    environ: Mapping[str, Any],
    status: int,
    duration_s: float,
    body_bytes: int | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A request's ECS HTTP fields, from its WSGI environ and its answer."""
    remote = environ.get("REMOTE_ADDR")
    supplied = str(environ.get("HTTP_X_REQUEST_ID", ""))
    fields: dict[str, Any] = {
        "http.request.method": environ.get("REQUEST_METHOD"),
        "url.path": environ.get("PATH_INFO") or "/",
        "http.response.status_code": status,
        "http.response.body.bytes": body_bytes,
        "event.duration": int(duration_s * 1e9),  # ECS: nanoseconds
        "event.outcome": "success" if status < 400 else "failure",
        "client.address": remote,
        "client.ip": remote if _is_ip(remote) else None,
        "user_agent.original": environ.get("HTTP_USER_AGENT"),
        "http.request.id": request_id or (supplied if _SAFE_ID.fullmatch(supplied) else None),
    }
    return {name: value for name, value in fields.items() if value is not None}


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception behind ``error``: its cause, context, or a wrapped exception
    in its arguments (how requests and urllib3 carry a reset or a TLS failure)."""
    seen = {id(error)}
    for _ in range(_CAUSE_DEPTH):
        inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if inner is None:
            inner = next((arg for arg in error.args if isinstance(arg, BaseException)), None)
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        error = inner
    return error


def error_fields(error: BaseException) -> dict[str, Any]:
    """``error.*`` for a failed request: our code, and the class and message of the cause."""
    cause = root_cause(error)
    kind = type(cause)
    module = "" if kind.__module__ == "builtins" else kind.__module__ + "."
    return {
        "error.code": error.code if isinstance(error, ScoringError) else None,
        "error.type": module + kind.__qualname__,
        "error.message": redact(str(cause) or str(error) or kind.__name__),
    }


def level_of(path: str, status: int) -> int:
    if status == 500:
        return logging.ERROR  # a bug, wherever it happened
    if path.rstrip("/") in QUIET_PATHS:
        return logging.DEBUG
    return logging.WARNING if status >= 500 else logging.INFO


def log_request(
    logger: logging.Logger,
    environ: dict[str, Any],
    response: Any,
    duration_s: float,
    *,
    error: BaseException | None = None,
    **fields: Any,
) -> None:
    """The one line for a scoring request: HTTP, outcome, cause, and the request context.

    ``error`` is what failed it: a ``ScoringError`` is described by its cause; anything else
    is a bug, and its stack trace goes with the line. The line is written when the response
    is closed, which a WSGI server does once the answer has gone out: formatting it
    stays off the caller's latency. Marks ``environ`` so that gunicorn's access log does not
    write a second line for the request.
    """
    status = int(response.status_code)
    extra = request_fields(
        environ,
        status,
        duration_s,
        body_bytes=response.content_length,
        request_id=response.headers.get("X-Request-Id"),
    )
    extra.update(ecs_fields(fields))
    context = _context.get() or {}
    timing = context.get("timing_ms")
    if isinstance(timing, dict):  # the pipeline's stage timings, filled as they ran
        extra["nsfwoid.timing_ms"] = {stage: round(ms, 3) for stage, ms in timing.items()}
    for name, value in ecs_fields(context).items():  # the context is gone by the time of writing
        extra.setdefault(name, value)
    exc_info = None
    if error is None:
        message = "scored"
    elif isinstance(error, ScoringError):
        message = f"request failed: {error}"
        extra.update(error_fields(error))
    else:
        message = "request failed: internal error"
        extra["error.code"] = "internal_error"
        exc_info = (type(error), error, error.__traceback__)
    environ[LOGGED] = True
    level = level_of(extra["url.path"], status)
    if logger.isEnabledFor(level):
        where = logger.findCaller(stacklevel=2)  # the caller, not the close hook, as origin
        record = logger.makeRecord(
            logger.name, level, where[0], where[1], message, (), exc_info, where[2], extra
        )
        response.call_on_close(lambda: logger.handle(record))


def _header(resp: Any, name: str) -> str | None:
    for key, value in getattr(resp, "headers", None) or ():
        if str(key).lower() == name:
            return str(value)
    return None


class GunicornJsonLogger(GunicornLogger):
    """gunicorn's error and access logs through the same ECS handler as everything else."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if not logging.getLogger().handlers:
            configure_logging(cfg.loglevel.upper())
        for logger in (self.error_log, self.access_log):
            logger.handlers[:] = []
            logger.propagate = True
        # The root's level decides, so that probes' debug lines appear at debug.
        self.access_log.setLevel(logging.NOTSET)

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """The line for a request the app did not log (operations endpoints, unknown paths)."""
        if not self.access_log_enabled or environ.get(LOGGED):
            return
        code = str(getattr(resp, "status", "") or "").split(" ", 1)[0]
        status = int(code) if code.isdigit() else 0
        fields = request_fields(
            environ,
            status,
            request_time.total_seconds(),
            body_bytes=getattr(resp, "sent", None),
            request_id=_header(resp, "x-request-id"),
        )
        path = fields["url.path"]
        self.access_log.log(level_of(path, status), f"{req.method} {path} {status}", extra=fields)


class NativeStderr:
    """C libraries (libtiff) write diagnostics about a caller's file straight to fd 2, as
    plain text. In the server, fd 2 is a pipe read by a thread instead: each line that is not
    already one of our JSON lines is logged as one JSON warning; JSON lines (gunicorn's
    logger may write to stderr) pass through to the real stderr unchanged."""

    def __init__(self, logger_name: str = "native") -> None:
        self._logger = logging.getLogger(logger_name)
        self._original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        self._reader = os.fdopen(read_end, "rb")
        self._thread = threading.Thread(target=self._pump, name="native-stderr", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for raw in self._reader:
            line = raw.rstrip(b"\r\n")
            if not line:
                continue
            if line.startswith(b"{"):
                try:
                    json.loads(line)
                except ValueError:
                    pass
                else:
                    os.write(self._original, line + b"\n")
                    continue
            text = line.decode("utf-8", "replace")
            log(self._logger, logging.WARNING, text, source="stderr")

    def close(self, timeout: float = 5) -> None:
        """Put the real stderr back and log what is still in the pipe (tests, shutdown)."""
        os.dup2(self._original, 2)  # the pipe's last write end closes: the reader sees EOF
        self._thread.join(timeout)
        self._reader.close()
        os.close(self._original)
