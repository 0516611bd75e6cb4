"""``function.body.read_body`` on its own: whole bodies, caps, short bodies, slow bodies.

Requests are werkzeug's own objects over a real byte stream (or a real socket pair for the
time bound); the servers this runs on (gunicorn, werkzeug) are exercised in test_app and
test_hostile_inputs.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest
from flask import Request
from werkzeug.test import EnvironBuilder

from function.body import READ_STEP, read_body
from function.errors import InvalidRequest, PayloadTooLarge, RequestTimeout


def request(
    stream: io.RawIOBase | io.BufferedIOBase,
    length: int | None,
    *,
    terminated: bool = False,
    content_type: str = "application/octet-stream",
) -> Request:
    environ = EnvironBuilder(method="POST", content_type=content_type).get_environ()
    environ["wsgi.input"] = stream
    environ.pop("CONTENT_LENGTH", None)
    if length is not None:
        environ["CONTENT_LENGTH"] = str(length)
    environ["wsgi.input_terminated"] = terminated
    return Request(environ)


def pattern(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


def test_a_body_of_several_read_steps_comes_back_whole_and_stays_readable() -> None:
    body = pattern(2 * READ_STEP + 12_345)
    req = request(io.BytesIO(body), len(body))
    assert read_body(req, limit=len(body), timeout=10) == body
    assert req.get_data() == body  # werkzeug's later readers see the same bytes


def test_form_parsing_reads_the_bytes_read_before() -> None:
    body = b"url=https%3A%2F%2Fexample.org%2Fa.jpg&mode=reference"
    req = request(io.BytesIO(body), len(body), content_type="application/x-www-form-urlencoded")
    assert read_body(req, limit=1000, timeout=10) == body
    assert req.form["url"] == "https://example.org/a.jpg"
    assert req.form["mode"] == "reference"


def test_a_declared_length_over_the_cap_is_refused_unread() -> None:
    stream = io.BytesIO(b"x" * 100)
    with pytest.raises(PayloadTooLarge, match="larger than 99 bytes"):
        read_body(request(stream, 100), limit=99, timeout=10)
    assert stream.tell() == 0


def test_a_chunked_body_of_several_read_steps_comes_back_whole() -> None:
    body = pattern(2 * READ_STEP + 777)
    req = request(io.BytesIO(body), None, terminated=True)
    assert read_body(req, limit=3 * READ_STEP, timeout=10) == body


def test_a_body_of_exactly_the_cap_is_read() -> None:
    body = pattern(5000)
    assert read_body(request(io.BytesIO(body), None, terminated=True), 5000, 10) == body


def test_a_stream_without_length_past_the_cap_is_refused() -> None:
    stream = io.BytesIO(b"y" * 10_000)
    with pytest.raises(PayloadTooLarge):
        read_body(request(stream, None, terminated=True), limit=5000, timeout=10)
    assert stream.tell() == 5001  # one byte past the cap shows it, no more is read


def test_no_length_on_a_server_that_does_not_end_the_stream_means_no_body() -> None:
    stream = io.BytesIO(b"never read")
    assert read_body(request(stream, None), limit=1000, timeout=10) == b""
    assert stream.tell() == 0


def test_a_body_shorter_than_declared_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="ended early"):
        read_body(request(io.BytesIO(b"z" * 10), 20), limit=1000, timeout=10)


class Broken(io.RawIOBase):
    """A stream whose connection breaks after ``good`` bytes (as gunicorn's chunked reader
    raises on bad framing)."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise OSError("connection reset")
        piece = min(size if size >= 0 else self.left, self.left)
        self.left -= piece
        return b"b" * piece


def test_a_broken_stream_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="ended early"):
        read_body(request(Broken(100), None, terminated=True), limit=1000, timeout=10)


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def test_a_body_that_stops_arriving_is_a_408(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = socket_pair
    client.sendall(b"only part of it")  # then nothing more, the socket left open
    with server.makefile("rb") as stream:
        req = request(stream, 1000)
        req.environ["werkzeug.socket"] = server
        with pytest.raises(RequestTimeout, match="longer than 0.2 s"):
            read_body(req, limit=10_000, timeout=0.2)


def test_a_body_that_arrives_in_pieces_within_the_time_is_read(
    socket_pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = socket_pair
    body = pattern(3 * READ_STEP)
    sent = threading.Event()

    def send() -> None:
        for start in range(0, len(body), 100_000):
            client.sendall(body[start : start + 100_000])
        sent.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    with server.makefile("rb") as stream:
        req = request(stream, len(body))
        req.environ["werkzeug.socket"] = server
        assert read_body(req, limit=len(body), timeout=60) == body
    assert sent.wait(timeout=60)
    sender.join(timeout=60)
