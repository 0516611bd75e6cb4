"""The request body, read once: capped in bytes and bounded in time, before any scoring slot.

Admission (``Service.admitted``) happens only after the body is in memory, so a client that
trickles its body a few bytes a second holds a server thread for at most ``body_timeout``
seconds and never a scoring slot. gunicorn's sockets have no timeout of their own; a timer
shuts the read side down at the deadline, which wakes a blocked ``recv``.

The bytes come straight from the server's ``wsgi.input``, in one call when the length is
declared (gunicorn receives it 1 MiB per ``recv``) and in ``READ_STEP`` pieces otherwise:
werkzeug's own ``get_data`` reads 8 KiB at a time, and each of those reads made gunicorn copy
the whole read-ahead it holds (up to 1 MiB): measured in docs/performance.md, "The HTTP path".
They are then handed to werkzeug as its cached body, so form and multipart parsing read the same
bytes from memory, and functions-framework's after-request read finds nothing left.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

from flask import Request

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


READ_STEP = 1 << 20
"""Bytes asked of the server at once for a body of undeclared length (chunked)."""


def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """All of the body, or 413 past ``limit`` bytes, 408 past ``timeout`` seconds."""
    too_large = f"the request body is larger than {limit} bytes"
    declared = request.content_length
    if declared is not None and declared > limit:
        _nothing_left(request)
        raise PayloadTooLarge(too_large)
    # Form parsing later reads the cached bytes; this caps what it may hold in memory.
    request.max_form_memory_size = limit
    environ = request.environ
    if declared is None and not environ.get("wsgi.input_terminated"):
        # No length and a server that does not end the stream for us: there is no body we
        # could read safely (werkzeug answers the same), so there is none.
        request._cached_data = b""
        return b""
    # Read up to one byte past the cap (a chunked body longer than it shows so), never past a
    # declared length (a server that hands over the raw socket would wait for more).
    wanted = declared if declared is not None else limit + 1
    step = declared if declared is not None else READ_STEP  # pieces cost copies of their own
    # The client's socket, as gunicorn (and werkzeug's development server) hand it over.
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    pieces: list[bytes] = []
    received = 0
    ended = False
    with _ReadTimer(sock if isinstance(sock, socket.socket) else None, timeout) as timer:
        try:
            while received < wanted:
                piece = environ["wsgi.input"].read(min(step, wanted - received))
                if not piece:
                    break
                pieces.append(piece)
                received += len(piece)
        except (OSError, ValueError):
            ended = True  # the connection broke, or a chunked body's framing did
    if timer.fired:
        _nothing_left(request)
        raise RequestTimeout(f"the request body took longer than {timeout:g} s")
    if ended or (declared is not None and received < declared):
        _nothing_left(request)
        raise InvalidRequest("the request body ended early")
    if received > limit:
        _nothing_left(request)
        raise PayloadTooLarge(too_large)
    data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    request._cached_data = data
    return data


def _nothing_left(request: Request) -> None:
    # functions-framework reads the body once more after every response; past the cap that
    # read raises (a 500). Whatever happened here, leave it nothing to read.
    request._cached_data = b""
