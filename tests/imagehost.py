"""A real HTTP image host on 127.0.0.1 for URL fetches, with the misbehaviours we defend against.

Each route is a function of the request handler, so a test can serve plain bytes, a status,
a redirect, a slow drip, a lying Content-Length or a server that never answers. Every request
is recorded in ``hits`` so tests can prove that a refused URL caused no connection; each path
also has an event set when it is first hit (``reached``) and one set when its route has
returned (``finished``), and the streaming routes count the bytes they managed to send
(``sent``), so a test proves "the fetch was cut short" by what the host saw, not by a clock.
Routes that stall wait on ``release`` (set by ``close``) with a safety timeout, not a sleep.
"""

from __future__ import annotations

import gzip
import socket
import struct
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        host = self.server.host
        host.hits.append(path)
        host.reached(path).set()
        route = host.routes.get(path)
        if route is None:
            send(self, b"not found", status=404, content_type="text/plain")
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client gave up first: what the tests of our deadlines expect
        finally:
            host.finished(path).set()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    host: ImageHost

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that resets a keep-alive connection (our fetcher cutting a fetch short)
        # is what the deadline tests expect, not a traceback worth printing.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def send(
    handler: BaseHTTPRequestHandler,
    body: bytes,
    *,
    status: int = 200,
    content_type: str = "image/jpeg",
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


class ImageHost:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        self.sent: dict[str, int] = {}
        self.release = threading.Event()
        self._reached: dict[str, threading.Event] = {}
        self._finished: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.host = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits_for(self, path: str) -> int:
        return sum(1 for hit in self.hits if hit == path)

    def _event(self, events: dict[str, threading.Event], path: str) -> threading.Event:
        with self._lock:
            return events.setdefault(path, threading.Event())

    def reached(self, path: str) -> threading.Event:
        """Set when a request for ``path`` has arrived."""
        return self._event(self._reached, path)

    def finished(self, path: str) -> threading.Event:
        """Set when the route serving ``path`` has returned (done, or the client gave up)."""
        return self._event(self._finished, path)

    def count_sent(self, path: str, n: int) -> None:
        with self._lock:
            self.sent[path] = self.sent.get(path, 0) + n

    # --- routes ---------------------------------------------------------------------
    def route(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    def file(
        self,
        path: str,
        body: bytes,
        content_type: str = "image/jpeg",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> str:
        return self.route(
            path, lambda h: send(h, body, status=status, content_type=content_type, headers=headers)
        )

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        def route(h: BaseHTTPRequestHandler) -> None:
            send(h, b"", status=status, content_type="text/plain", headers={"Location": location})

        return self.route(path, route)

    def drip(self, path: str, body: bytes, chunk: int, interval: float) -> str:
        """Send ``body`` a few bytes at a time: each read stays under any read timeout."""

        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            path = h.path.split("?", 1)[0]
            for start in range(0, len(body), chunk):
                h.wfile.write(body[start : start + chunk])
                h.wfile.flush()
                self.count_sent(path, len(body[start : start + chunk]))
                if self.release.wait(interval):
                    return

        return self.route(path, route)

    def hang(self, path: str, seconds: float) -> str:
        """Accept the request, then say nothing until ``release`` (at most ``seconds``)."""
        return self.route(path, lambda h: self.stall(seconds))

    def stall(self, seconds: float) -> None:
        """Hold the current route until ``release`` is set or ``seconds`` pass (safety net)."""
        self.release.wait(seconds)

    def endless(self, path: str, chunk: bytes = b"\xff" * 65536, limit: int = 64 << 20) -> str:
        """A body with no Content-Length that goes on (bounded, so the test ends)."""

        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Connection", "close")
            h.end_headers()
            path = h.path.split("?", 1)[0]
            sent = 0
            while sent < limit:
                h.wfile.write(chunk)
                sent += len(chunk)
                self.count_sent(path, len(chunk))
            h.close_connection = True

        return self.route(path, route)

    def lying_length(self, path: str, body: bytes, claimed: int) -> str:
        """Claims ``claimed`` bytes in Content-Length, sends ``body``, closes."""

        def route(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Content-Length", str(claimed))
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)

        return self.route(path, route)

    def reset(self, path: str) -> str:
        """Read the request, then abort the connection: a TCP reset, no answer at all."""

        def route(h: BaseHTTPRequestHandler) -> None:
            # Linger on with a zero timeout: close() sends RST instead of FIN.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True

        return self.route(path, route)

    def gzip_bomb(self, path: str, decoded_size: int) -> str:
        """A small gzip body that inflates to ``decoded_size`` bytes, sent although we
        asked for ``Accept-Encoding: identity``."""
        body = gzip.compress(b"\0" * decoded_size, compresslevel=9)

        def route(h: BaseHTTPRequestHandler) -> None:
            send(h, body, headers={"Content-Encoding": "gzip"})

        return self.route(path, route)
