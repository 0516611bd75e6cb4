"""The request body, read once: capped in bytes and bounded in time, before any scoring slot.

Admission (``Service.admitted``) happens only after the body is in memory, so a client that
trickles its body a few bytes a second holds a server thread for at most ``body_timeout``
seconds and never a scoring slot. gunicorn's sockets have no timeout of their own; a timer
shuts the read side down at the deadline, which wakes a blocked ``recv``.

werkzeug keeps what is read here (``cache=True``), so form and multipart parsing later read
the same bytes from memory, and functions-framework's after-request read finds nothing left.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from flask import Request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from function.errors import InvalidRequest, PayloadTooLarge, RequestTimeout


class _ReadTimer:
    """Shuts down the read side of the client's socket if the body is not in by ``timeout``."""

    def __init__(self, sock: socket.socket | None, timeout: float) -> None:
        self.fired = False
        self._sock = sock
        self._timer = threading.Timer(timeout, self._fire) if sock is not None else None
        if self._timer is not None:
            self._timer.daemon = True

    def __enter__(self) -> _ReadTimer:
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        assert self._sock is not None
        try:
            self._sock.shutdown(socket.SHUT_RD)  # the 408 can still be written
        except OSError:
            pass  # the client is already gone


def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """All of the body, or 413 past ``limit`` bytes, 408 past ``timeout`` seconds."""
    too_large = f"the request body is larger than {limit} bytes"
    declared = request.content_length
    if declared is not None and declared > limit:
        _nothing_left(request)
        raise PayloadTooLarge(too_large)
    # werkzeug stops reading *at* its limit and raises only on a later read, so a chunked
    # body longer than the cap would come back cut to the cap: one byte more shows it.
    request.max_content_length = limit + 1
    request.max_form_memory_size = limit
    # The client's socket, as gunicorn (and werkzeug's development server) hand it over.
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    with _ReadTimer(sock if isinstance(sock, socket.socket) else None, timeout) as timer:
        try:
            data = request.get_data(cache=True)
        except RequestEntityTooLarge as exc:
            _nothing_left(request)
            raise PayloadTooLarge(too_large) from exc
        except ClientDisconnected as exc:
            _nothing_left(request)
            if timer.fired:
                raise RequestTimeout(f"the request body took longer than {timeout:g} s") from exc
            raise InvalidRequest("the request body ended early") from exc
    if timer.fired or (declared is not None and len(data) < declared):
        _nothing_left(request)
        if timer.fired:
            raise RequestTimeout(f"the request body took longer than {timeout:g} s")
        raise InvalidRequest("the request body ended early")
    if len(data) > limit:
        _nothing_left(request)
        raise PayloadTooLarge(too_large)
    return data


def _nothing_left(request: Request) -> None:
    # functions-framework reads the body once more after every response; past the cap that
    # read raises (a 500). Whatever happened here, leave it nothing to read.
    request._cached_data = b""
