"""JSON log lines on stdout: one object per line, with severity and the request's context.

The request id and other per-request fields travel in a ``contextvars`` context, so any
``logging`` call made while serving a request carries them. Image bytes never reach a log.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from gunicorn.glogging import Logger as GunicornLogger

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "nsfwoid_log_context", default=None
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context.get() or {})
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger through one JSON handler on stdout (called once, at start-up)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


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
    logger.log(level, message, extra={"fields": fields})


def _header(resp: Any, name: str) -> str | None:
    for key, value in getattr(resp, "headers", None) or ():
        if str(key).lower() == name:
            return str(value)
    return None


class GunicornJsonLogger(GunicornLogger):
    """gunicorn's error and access logs as the same JSON lines."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(JsonFormatter())

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if not (self.cfg.accesslog or self.cfg.logconfig or self.cfg.syslog):
            return
        status = str(getattr(resp, "status", "") or "").split(" ", 1)[0]
        self.access_log.info(
            "access",
            extra={
                "fields": {
                    "type": "access",
                    "method": req.method,
                    "path": req.path,
                    "status": int(status) if status.isdigit() else status,
                    "bytes": getattr(resp, "sent", None),
                    "duration_ms": round(request_time.total_seconds() * 1000, 3),
                    "remote": environ.get("REMOTE_ADDR"),
                    "user_agent": environ.get("HTTP_USER_AGENT"),
                    "request_id": _header(resp, "x-request-id") or environ.get("HTTP_X_REQUEST_ID"),
                }
            },
        )


class NativeStderr:
    """C libraries (libtiff) write diagnostics about a caller's file straight to fd 2, as
    plain text. In the server, fd 2 is a pipe read by a thread instead: each line that is not
    already one of our JSON lines is logged as one JSON warning; JSON lines (gunicorn's
    error log also writes to stderr) pass through to the real stderr unchanged."""

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
