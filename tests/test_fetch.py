"""The URL fetcher against a real, misbehaving HTTP host on loopback.

Unit level: ``Fetcher`` with ``Settings`` built here (private networks allowed: the host is on
127.0.0.1; the guard itself is ``test_netguard``'s subject). HTTP level: the function app
with short fetch timeouts, for the status, code and ``Retry-After`` each failure maps to.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from function.config import DEFAULT_USER_AGENT, Settings
from function.errors import (
    DeadlineExceeded,
    ScoringError,
    SourceNotAllowed,
    SourceTimeout,
    SourceTooLarge,
    SourceUnavailable,
    TooManyRedirects,
)
from function.fetch import Fetcher
from function.urls import check_url, host_allowed
from tests.fakes import fake_app
from tests.imagehost import ImageHost, send
from tests.photos import photo_jpeg

DEADLINE = 1.5  # the fetch deadline of this module's fetchers and app
CAP = 1 << 20  # a small body cap keeps the oversized-body cases fast

BODY = photo_jpeg("coffee", (96, 64))


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "allow_private_networks": True,
        "fetch_deadline": DEADLINE,
        "fetch_read_timeout": 0.8,
        "fetch_connect_timeout": 1.0,
        "max_fetch_bytes": CAP,
    }
    return Settings(**(base | overrides))


@pytest.fixture()
def fetcher() -> Iterator[Fetcher]:
    instance = Fetcher(settings())
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def fetch_app() -> Iterator[Flask]:
    """The function's app with this module's fetch settings, over the stand-in model: these
    tests are about the status, code and Retry-After of each fetch failure, not the score."""
    with fake_app(
        fetch_deadline=DEADLINE,
        fetch_read_timeout=0.8,
        fetch_connect_timeout=1.0,
        max_fetch_bytes=CAP,
    ) as (app, _service):
        yield app


@pytest.fixture()
def api(fetch_app: Flask) -> FlaskClient:
    return fetch_app.test_client()


def score_url(api: FlaskClient, url: str) -> Any:
    return api.post("/", json={"url": url})


def error_code(response: Any) -> str:
    return str(response.get_json()["error"]["code"])


def fails_with(fetcher: Fetcher, url: str, error: type[ScoringError]) -> ScoringError:
    with pytest.raises(error) as caught:
        fetcher.fetch(url)
    return caught.value


# --- before any connection ------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.jpg",
        "gopher://127.0.0.1:70/_x",
        "data:image/jpeg;base64,/9j/",
        "javascript:alert(1)",
        "dict://127.0.0.1:11211/stats",
        "ws://127.0.0.1/x",
        "//127.0.0.1/x.jpg",
        "x.jpg",
        "http://user:pass@127.0.0.1/x.jpg",
        "http://user@127.0.0.1/x.jpg",
        "http://127.0.0.1\\@evil.test/x.jpg",
        "http:///x.jpg",
        "http://127.0.0.1:0/x.jpg",
        "http://127.0.0.1:99999/x.jpg",
        "http://127.0.0.1:port/x.jpg",
        "http://[::1/x.jpg",
        "http://[fe80::1%25eth0]/x.jpg",
        "http://evil.test\\.allowed.test/x.jpg",
        "http://evil.test%2f.allowed.test/x.jpg",
        "http://evil.test\t.allowed.test/x.jpg",
        "http://evil.test .allowed.test/x.jpg",
        "http://" + "a" * 2100 + ".test/x.jpg",
    ],
)
def test_refused_before_any_connection(url: str, image_host: ImageHost) -> None:
    before = len(image_host.hits)
    with pytest.raises(SourceNotAllowed):
        check_url(url, settings())
    fetcher = Fetcher(settings())
    try:
        with pytest.raises(SourceNotAllowed):
            fetcher.fetch(url)
    finally:
        fetcher.close()
    assert len(image_host.hits) == before


def test_url_length_cap_counts_the_whole_url() -> None:
    limit = settings().max_url_length
    url = "http://images.test/" + "a" * (limit - len("http://images.test/"))
    assert check_url(url, settings()) == "images.test"
    with pytest.raises(SourceNotAllowed):
        check_url(url + "a", settings())


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("upload.wikimedia.org", True),
        ("a.b.example.org", True),
        ("b.example.org", True),
        ("example.org", False),  # "*.example.org" means subdomains only
        ("evilexample.org", False),
        ("example.org.evil.test", False),
        ("upload.wikimedia.org.evil.test", False),
        ("wikimedia.org", False),
        ("evil.test", False),
    ],
)
def test_host_allowlist_exact_and_wildcard(host: str, allowed: bool) -> None:
    patterns = ("upload.wikimedia.org", "*.example.org")
    assert host_allowed(host, patterns) is allowed
    strict = settings(allowed_hosts=patterns)
    url = f"http://{host.upper()}./x.jpg"  # case and a trailing dot do not matter
    if allowed:
        assert check_url(url, strict) == host
    else:
        with pytest.raises(SourceNotAllowed):
            check_url(url, strict)


def test_unicode_hosts_are_checked_in_the_form_that_is_resolved() -> None:
    strict = settings(allowed_hosts=("*.allowed.test",))
    assert check_url("http://b\u00fccher.allowed.test/x", strict) == "xn--bcher-kva.allowed.test"
    with pytest.raises(SourceNotAllowed):
        check_url("http://b\u00fccher.evil.test/x", strict)


# --- redirects ------------------------------------------------------------------------
def test_relative_and_absolute_redirects_are_followed(
    fetcher: Fetcher, image_host: ImageHost
) -> None:
    image_host.file("/fetch/final.jpg", BODY)
    image_host.redirect("/fetch/rel/start", "../final.jpg")
    image_host.redirect("/fetch/abs", image_host.url("/fetch/rel/start"), status=301)
    image_host.redirect("/fetch/root", "/fetch/abs", status=307)
    fetched = fetcher.fetch(image_host.url("/fetch/root"))
    assert fetched.data == BODY
    assert fetched.redirects == 3
    assert fetched.url == image_host.url("/fetch/final.jpg")


def test_exactly_max_redirects_is_allowed_one_more_is_not(
    fetcher: Fetcher, image_host: ImageHost
) -> None:
    image_host.file("/fetch/chain/0", BODY)
    for i in range(1, 7):
        image_host.redirect(f"/fetch/chain/{i}", f"/fetch/chain/{i - 1}", status=308)
    assert fetcher.fetch(image_host.url("/fetch/chain/5")).redirects == 5
    fails_with(fetcher, image_host.url("/fetch/chain/6"), TooManyRedirects)


def test_redirect_loop_ends_after_max_redirects(fetcher: Fetcher, image_host: ImageHost) -> None:
    image_host.redirect("/fetch/loop", "/fetch/loop")
    before = image_host.hits_for("/fetch/loop")
    fails_with(fetcher, image_host.url("/fetch/loop"), TooManyRedirects)
    assert image_host.hits_for("/fetch/loop") - before == 6  # the request and 5 redirects


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://127.0.0.1/x", "http://u:p@h/x"],
)
def test_redirect_to_a_refused_scheme(
    fetcher: Fetcher, image_host: ImageHost, location: str
) -> None:
    image_host.redirect("/fetch/to-scheme", location)
    fails_with(fetcher, image_host.url("/fetch/to-scheme"), SourceNotAllowed)


def test_redirect_to_a_host_off_the_allowlist_is_not_followed(image_host: ImageHost) -> None:
    image_host.file("/fetch/offlist", BODY)
    image_host.redirect("/fetch/to-offlist", f"http://localhost:{image_host.port}/fetch/offlist")
    strict = Fetcher(settings(allowed_hosts=("127.0.0.1",)))
    try:
        fails_with(strict, image_host.url("/fetch/to-offlist"), SourceNotAllowed)
    finally:
        strict.close()
    assert image_host.hits_for("/fetch/to-offlist") == 1
    assert image_host.hits_for("/fetch/offlist") == 0


def test_redirect_to_loopback_is_refused_when_private_networks_are(
    image_host: ImageHost,
) -> None:
    image_host.file("/fetch/meta", BODY)
    guarded = Fetcher(settings(allow_private_networks=False))
    try:
        # The first hop is already loopback: refused at connect time, nothing requested.
        fails_with(guarded, image_host.url("/fetch/meta"), SourceNotAllowed)
    finally:
        guarded.close()
    assert image_host.hits_for("/fetch/meta") == 0


def test_redirect_without_location_is_an_unavailable_source(
    fetcher: Fetcher, image_host: ImageHost
) -> None:
    image_host.file("/fetch/302-bare", b"", status=302, content_type="text/plain")
    fails_with(fetcher, image_host.url("/fetch/302-bare"), SourceUnavailable)


# --- statuses of the image host ------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "source_not_found"), (410, "source_not_found"), (403, "source_forbidden")],
)
def test_missing_source_is_a_422_without_retry_after(
    api: FlaskClient, image_host: ImageHost, status: int, code: str
) -> None:
    url = image_host.file(
        f"/fetch/status/{status}", b"no", status=status, content_type="text/plain"
    )
    response = score_url(api, url)
    assert response.status_code == 422  # the caller's URL is wrong: no proxy should retry it
    assert error_code(response) == code
    assert str(status) in response.get_json()["error"]["message"]
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, "7", "7"),
        (503, "7", "7"),
        (503, "3600", "60"),  # capped: a source cannot park our callers for an hour
        (429, "0", "1"),
        (429, None, "5"),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT", "5"),
        (503, "soon", "5"),
        (503, "\u00b2", "5"),  # latin-1 "²": str.isdigit() says yes, int() says no
        (503, "9" * 5000, "5"),  # past int()'s digit limit
        (503, "-3", "5"),
    ],
)
def test_overloaded_source_is_a_503_with_retry_after(
    api: FlaskClient, image_host: ImageHost, status: int, retry_after: str | None, expected: str
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    path = f"/fetch/busy/{status}/{abs(hash(retry_after))}"
    url = image_host.file(path, b"busy", status=status, content_type="text/plain", headers=headers)
    response = score_url(api, url)
    assert response.status_code == 503
    assert error_code(response) == "source_unavailable"
    assert response.headers["Retry-After"] == expected


@pytest.mark.parametrize("status", [500, 502, 504, 418, 451, 204, 304])
def test_other_source_statuses_are_502(
    api: FlaskClient, image_host: ImageHost, status: int
) -> None:
    url = image_host.file(f"/fetch/other/{status}", b"", status=status, content_type="text/plain")
    response = score_url(api, url)
    if status == 204:  # a 2xx with no body is an empty image, not an unavailable source
        assert response.status_code == 422
        assert error_code(response) == "undecodable_image"
        return
    assert response.status_code == 502
    assert error_code(response) == "source_unavailable"


def test_connection_refused_is_502(api: FlaskClient) -> None:
    from tests.conftest import free_port

    response = score_url(api, f"http://127.0.0.1:{free_port()}/x.jpg")
    assert response.status_code == 502
    assert error_code(response) == "source_unavailable"


# --- time -------------------------------------------------------------------------------
# Each case proves the fetch was cut by the deadline from what the host saw: the error is the
# deadline's, and the host had not finished sending (or was still holding) when the fetcher
# gave up. No elapsed time is asserted; the host's own stalls are bounded safety nets.
def test_slow_drip_body_ends_at_the_deadline(
    fetcher: Fetcher, api: FlaskClient, image_host: ImageHost
) -> None:
    # 20 bytes every 0.2 s: each read is well under the read timeout, the whole body (about
    # a minute of dripping) is far past the deadline.
    url = image_host.drip("/fetch/drip", BODY, chunk=20, interval=0.2)
    fails_with(fetcher, url, SourceTimeout)
    assert 0 < image_host.sent["/fetch/drip"] < len(BODY)  # cut mid-body

    url = image_host.drip("/fetch/drip-api", BODY, chunk=20, interval=0.2)
    response = score_url(api, url)
    assert image_host.sent["/fetch/drip-api"] < len(BODY)
    assert response.status_code == 504
    assert error_code(response) == "source_timeout"
    assert response.headers["Retry-After"] == "5"


def drip_headers(handler: BaseHTTPRequestHandler) -> None:
    """Status line, then one header every 0.3 s for 15 s: no single read ever times out."""
    host = handler.server.host  # type: ignore[attr-defined]
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    handler.wfile.flush()
    for i in range(50):
        handler.wfile.write(f"X-Drip-{i}: {'x' * 10}\r\n".encode())
        handler.wfile.flush()
        host.count_sent("/fetch/drip-headers", 1)
        if host.release.wait(0.3):
            break
    handler.close_connection = True


def test_slow_drip_headers_end_at_the_deadline(fetcher: Fetcher, image_host: ImageHost) -> None:
    url = image_host.route("/fetch/drip-headers", drip_headers)
    fails_with(fetcher, url, SourceTimeout)
    assert image_host.sent["/fetch/drip-headers"] < 50  # cut before the headers ended


def test_hang_is_a_504(fetcher: Fetcher, api: FlaskClient, image_host: ImageHost) -> None:
    url = image_host.hang("/fetch/hang", seconds=30)
    fails_with(fetcher, url, SourceTimeout)
    assert image_host.reached("/fetch/hang").is_set()
    assert not image_host.finished("/fetch/hang").is_set()  # the host was still holding
    response = score_url(api, url)
    assert response.status_code == 504
    assert error_code(response) == "source_timeout"


def test_a_sooner_caller_deadline_wins_and_is_reported_as_such(
    fetcher: Fetcher, image_host: ImageHost
) -> None:
    url = image_host.drip("/fetch/drip-caller", BODY, chunk=20, interval=0.2)
    with pytest.raises(DeadlineExceeded):  # the caller's error, not the fetch's SourceTimeout
        fetcher.fetch(url, deadline=time.monotonic() + 0.5)
    assert image_host.sent["/fetch/drip-caller"] < len(BODY)


def test_an_expired_caller_deadline_makes_no_request(
    fetcher: Fetcher, image_host: ImageHost
) -> None:
    url = image_host.file("/fetch/late", BODY)
    with pytest.raises(DeadlineExceeded):
        fetcher.fetch(url, deadline=time.monotonic() - 1)
    assert image_host.hits_for("/fetch/late") == 0


# --- size -------------------------------------------------------------------------------
def test_endless_body_stops_at_the_cap(
    fetcher: Fetcher, api: FlaskClient, image_host: ImageHost
) -> None:
    url = image_host.endless("/fetch/endless", limit=64 << 20)
    fails_with(fetcher, url, SourceTooLarge)
    # The fetcher stopped reading near the cap: the host could not send all it meant to
    # (socket buffers let it get somewhat past the cap, nowhere near 64 MiB).
    assert image_host.finished("/fetch/endless").wait(30)
    assert image_host.sent["/fetch/endless"] < 16 * CAP
    response = score_url(api, url)
    assert response.status_code == 422
    assert error_code(response) == "source_too_large"


def claims_huge_then_hangs(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(10 << 30))
    handler.end_headers()
    handler.wfile.write(BODY[:100])
    handler.wfile.flush()
    # Reading on would wait here until the deadline: refusing must not read.
    handler.server.host.stall(30)  # type: ignore[attr-defined]


def test_declared_length_over_the_cap_is_refused_before_reading(
    fetcher: Fetcher, api: FlaskClient, image_host: ImageHost
) -> None:
    url = image_host.route("/fetch/claims-huge", claims_huge_then_hangs)
    fails_with(fetcher, url, SourceTooLarge)  # reading on would have ended in SourceTimeout
    assert not image_host.finished("/fetch/claims-huge").is_set()  # the host still holds
    response = score_url(api, url)
    assert response.status_code == 422
    assert error_code(response) == "source_too_large"


def test_body_exactly_at_the_cap_is_accepted(fetcher: Fetcher, image_host: ImageHost) -> None:
    body = BODY + b"\0" * (CAP - len(BODY))
    assert len(body) == CAP
    assert fetcher.fetch(image_host.file("/fetch/at-cap", body)).data == body
    fails_with(fetcher, image_host.file("/fetch/over-cap", body + b"\0"), SourceTooLarge)


def test_short_body_is_a_502(fetcher: Fetcher, api: FlaskClient, image_host: ImageHost) -> None:
    url = image_host.lying_length("/fetch/short", BODY[:500], claimed=len(BODY))
    fails_with(fetcher, url, SourceUnavailable)
    response = score_url(api, url)
    assert response.status_code == 502
    assert error_code(response) == "source_unavailable"
    assert "Retry-After" in response.headers


def malformed_length(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", "\u00b2")
    handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(BODY)
    handler.close_connection = True


def test_malformed_content_length_is_not_a_500(fetcher: Fetcher, image_host: ImageHost) -> None:
    # No usable length: the body is read to the end of the connection, under the cap.
    assert fetcher.fetch(image_host.route("/fetch/length-sup2", malformed_length)).data == BODY


def deflate_bomb(decoded: int) -> bytes:
    """A gzip body of ``decoded`` zero bytes, compressed in 1 MiB steps (no big buffer)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    parts = [packer.compress(block) for _ in range(decoded >> 20)]
    return b"".join(parts) + packer.flush()


def test_gzip_bomb_counts_decoded_bytes(
    fetcher: Fetcher, api: FlaskClient, image_host: ImageHost
) -> None:
    bomb = deflate_bomb(256 << 20)
    assert len(bomb) < 300_000  # well under the cap on the wire
    url = image_host.file("/fetch/gzip-bomb", bomb, headers={"Content-Encoding": "gzip"})
    fails_with(fetcher, url, SourceTooLarge)  # the wire bytes are under the cap: decoded count
    response = score_url(api, url)
    assert response.status_code == 422
    assert error_code(response) == "source_too_large"


def test_small_gzip_body_is_decoded(fetcher: Fetcher, image_host: ImageHost) -> None:
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    body = packer.compress(BODY) + packer.flush()
    url = image_host.file("/fetch/gzip-small", body, headers={"Content-Encoding": "gzip"})
    assert fetcher.fetch(url).data == BODY


# --- what we send -----------------------------------------------------------------------
def test_request_headers_ask_for_identity_and_name_us(
    fetcher: Fetcher, image_host: ImageHost
) -> None:
    seen: list[dict[str, str]] = []

    def record(handler: BaseHTTPRequestHandler) -> None:
        seen.append(dict(handler.headers.items()))
        send(handler, BODY)

    url = image_host.route("/fetch/headers", record)
    fetcher.fetch(url)
    custom = Fetcher(settings(user_agent="nsfwoid-test/9 (+https://example.org/bot)"))
    try:
        custom.fetch(url)
    finally:
        custom.close()
    assert len(seen) == 2
    for headers in seen:
        assert headers["Accept-Encoding"] == "identity"
        assert headers["Accept"] == "image/*"
        assert "Authorization" not in headers and "Cookie" not in headers
    assert seen[0]["User-Agent"] == DEFAULT_USER_AGENT
    assert seen[1]["User-Agent"] == "nsfwoid-test/9 (+https://example.org/bot)"


def test_cookies_set_by_an_image_host_are_never_sent_back(
    fetcher: Fetcher, image_host: ImageHost
) -> None:
    seen: list[dict[str, str]] = []

    def record(handler: BaseHTTPRequestHandler) -> None:
        seen.append(dict(handler.headers.items()))
        send(handler, BODY, headers={"Set-Cookie": "session=caller-a; Path=/"})

    first = image_host.route("/fetch/cookie-set", record)
    second = image_host.route("/fetch/cookie-later", record)
    # Set on a redirect hop too: the next hop of the same fetch must not carry it either.
    hop = image_host.route(
        "/fetch/cookie-hop",
        lambda h: send(
            h,
            b"",
            status=302,
            content_type="text/plain",
            headers={"Location": "/fetch/cookie-later", "Set-Cookie": "hop=1; Path=/"},
        ),
    )
    assert fetcher.fetch(first).data == BODY
    assert fetcher.fetch(second).data == BODY
    assert fetcher.fetch(hop).data == BODY
    assert len(seen) == 3
    assert all("Cookie" not in headers for headers in seen), seen
    assert len(fetcher._session.cookies) == 0


def test_the_fetcher_keeps_working_after_every_failure(
    fetcher: Fetcher, image_host: ImageHost
) -> None:
    ok = image_host.file("/fetch/after", BODY)
    failing = [
        image_host.lying_length("/fetch/after-short", BODY[:500], claimed=len(BODY)),
        image_host.endless("/fetch/after-endless", limit=8 << 20),
        image_host.route("/fetch/after-huge", claims_huge_then_hangs),
        image_host.redirect("/fetch/after-loop", "/fetch/after-loop"),
        image_host.file("/fetch/after-503", b"", status=503, content_type="text/plain"),
    ]
    for url in failing:
        with pytest.raises(ScoringError):
            fetcher.fetch(url)
        assert fetcher.fetch(ok).data == BODY
