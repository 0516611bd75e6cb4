"""A table of hostile inputs, each answered with one exact status and error code, never a 500.

Every case is generated here: Pillow-made images of each accepted format (intact, cut, or
corrupted), hand-made headers declaring huge sizes, animations, formats we refuse, wrong
content types, and URLs aimed at private networks or at misbehaving hosts. After each case
the service must still be ready, and the loopback image host's request log must show that
no forbidden URL was fetched.

Two apps: ``guarded`` refuses private networks (as production does) and reaches "public"
names through a scripted resolver whose public address is wired to the loopback image host,
so a redirect from a public name to loopback can be tried; ``open`` allows private networks
so the misbehaving-host cases can reach the loopback image host at all.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import requests
from flask import Flask

from function.decode import MAX_FRAMES_WALKED, MAX_JPEG_SCANS, decode
from function.errors import ImageTooLarge
from function.fetch import Fetcher
from function.netguard import AddressPolicy, system_resolver
from tests.conftest import make_app, running_server, start_app
from tests.hostile_files import (
    FORMATS,
    HALF_DECODES,
    NOT_OURS,
    PILLOW_ONLY,
    bmp_declaring,
    encoded,
    gif_declaring,
    gif_frames,
    gif_growing_canvas,
    gif_tiny_frames,
    huge_jpeg,
    jpeg_declaring,
    jpeg_with_scans,
    photo,
    png_16bit_rgba,
    png_declaring,
    png_worst_case,
    tiff_declaring,
    tiff_pages,
    tiff_with_huge_second_page,
    webp_declaring,
)
from tests.imagehost import ImageHost

PUBLIC = "93.184.215.14"  # what the scripted resolver answers for the "public" names
BODY_CAP = 12_000_000
FAST_FETCH = {
    "NSFWOID_FETCH_DEADLINE": "1.5",
    "NSFWOID_FETCH_READ_TIMEOUT": "0.8",
    "NSFWOID_FETCH_CONNECT_TIMEOUT": "1",
    "NSFWOID_MAX_FETCH_BYTES": str(1 << 20),
    "NSFWOID_MAX_BODY_BYTES": str(BODY_CAP),
}


# --- the table ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    app: str  # "guarded" or "permissive": the fixture that serves the case
    request: Callable[[ImageHost], dict[str, Any]]  # test-client keyword arguments
    status: int
    code: str | None  # None: a score
    forbidden: tuple[str, ...] = ()  # image-host paths that must see no request at all
    check: Callable[[dict[str, Any]], None] | None = field(default=None)


def raw(data: Callable[[], bytes], content_type: str = "image/jpeg", **query: str) -> Any:
    def build(host: ImageHost) -> dict[str, Any]:
        return {"data": data(), "content_type": content_type, "query_string": query}

    return build


def url_of(make: Callable[[ImageHost], str]) -> Any:
    def build(host: ImageHost) -> dict[str, Any]:
        return {"json": {"url": make(host)}}

    return build


def tiny_frames_sampled_early(result: dict[str, Any]) -> None:
    # Frames are counted up to one past the walk's cap, no further.
    assert result["image"]["frames"] == MAX_FRAMES_WALKED + 1
    indices = [frame["index"] for frame in result["frame_scores"]]
    assert len(indices) == 8 and max(indices) == MAX_FRAMES_WALKED - 1


def truncated(result: dict[str, Any]) -> None:
    assert result["image"]["truncated"] is True


def within_budget(result: dict[str, Any]) -> None:
    # 16 frames of 4 MP: only the first 12 fit the 50 MP budget, 8 of them are sampled.
    assert result["image"]["frames"] == 16
    indices = [frame["index"] for frame in result["frame_scores"]]
    assert len(indices) == 8 and max(indices) <= 11


def image_cases() -> list[Case]:
    cases: list[Case] = []
    for fmt, (mime, options) in FORMATS.items():
        lower = fmt.lower()

        def data(fmt: str = fmt, options: dict[str, Any] = options) -> bytes:
            return encoded(fmt, **options)

        cases += [
            Case(f"{lower}-intact", "guarded", raw(data, mime), 200, None),
            Case(
                f"{lower}-header-only",
                "guarded",
                raw(lambda d=data: d()[:16], mime),
                422,
                "undecodable_image",
            ),
            Case(
                f"{lower}-magic-then-junk",
                "guarded",
                raw(lambda d=data: d()[:12] + bytes(range(256)) * 4, mime),
                422,
                "undecodable_image",
            ),
        ]
        if fmt in HALF_DECODES:
            cases.append(
                Case(
                    f"{lower}-cut-in-half",
                    "guarded",
                    raw(lambda d=data: d()[: len(d()) // 2], mime),
                    200,
                    None,
                    check=truncated,
                )
            )
        else:
            cases.append(
                Case(
                    f"{lower}-cut-in-half",
                    "guarded",
                    raw(lambda d=data: d()[: len(d()) // 2], mime),
                    422,
                    "undecodable_image",
                )
            )
    too_large = "image_too_large"
    cases += [
        Case(
            "png-ihdr-100000x100000",
            "guarded",
            raw(lambda: png_declaring(100_000, 100_000), "image/png"),
            422,
            too_large,
        ),
        Case(
            "png-ihdr-7100x7100-over-our-cap",
            "guarded",
            raw(lambda: png_declaring(7100, 7100), "image/png"),
            422,
            too_large,
        ),
        Case(
            "png-ihdr-zero-width",
            "guarded",
            raw(lambda: png_declaring(0, 100), "image/png"),
            422,
            "undecodable_image",
        ),
        Case(
            "gif-screen-65535x65535",
            "guarded",
            raw(lambda: gif_declaring(65535, 65535), "image/gif"),
            422,
            too_large,
        ),
        Case(
            "bmp-60000x60000",
            "guarded",
            raw(lambda: bmp_declaring(60000, 60000), "image/bmp"),
            422,
            too_large,
        ),
        Case(
            "bmp-60000x60000-top-down",
            "guarded",
            raw(lambda: bmp_declaring(60000, -60000), "image/bmp"),
            422,
            too_large,
        ),
        Case(
            "jpeg-sof-65000x65000",
            "guarded",
            raw(lambda: jpeg_declaring(65000, 65000)),
            422,
            too_large,
        ),
        Case(
            "jpeg-sof-65000x65000-reference",
            "guarded",
            raw(lambda: jpeg_declaring(65000, 65000), preprocessing="reference"),
            422,
            too_large,
        ),
        Case(
            "tiff-100000x100000",
            "guarded",
            raw(lambda: tiff_declaring(100_000, 100_000), "image/tiff"),
            422,
            too_large,
        ),
        Case(
            "webp-canvas-16384x16384",
            "guarded",
            raw(lambda: webp_declaring(16384, 16384), "image/webp"),
            422,
            too_large,
        ),
        Case(
            "gif-frame-grows-canvas-past-cap",
            "guarded",
            raw(lambda: gif_growing_canvas(7100, 7100), "image/gif"),
            422,
            too_large,
        ),
        Case(
            "tiff-second-page-past-cap",
            "guarded",
            raw(tiff_with_huge_second_page, "image/tiff"),
            422,
            too_large,
        ),
        Case(
            "gif-16-frames-x-4mp-sampled-within-budget",
            "guarded",
            raw(lambda: gif_frames(16, (2000, 2000)), "image/gif"),
            200,
            None,
            check=within_budget,
        ),
        Case(
            "gif-2-frames-each-past-cap",
            "guarded",
            raw(lambda: gif_frames(2, (7100, 7100)), "image/gif"),
            422,
            too_large,
        ),
        Case("jpeg-63mp-standard-draft-mode", "guarded", raw(huge_jpeg), 200, None),
        # The costliest PNGs to decode, a few hundred KB each: decoded band by band, within
        # the pod's decode memory budget.
        Case(
            "png-rgba-49mp-near-cap",
            "guarded",
            raw(lambda: png_worst_case("RGBA", (7000, 7000)), "image/png"),
            200,
            None,
        ),
        Case(
            "png-palette-transparency-49mp-near-cap",
            "guarded",
            raw(lambda: png_worst_case("P", (7000, 7000)), "image/png"),
            200,
            None,
        ),
        Case(
            "png-16bit-rgba-12mp",
            "guarded",
            raw(lambda: png_16bit_rgba((4000, 3000)), "image/png"),
            200,
            None,
        ),
        Case(
            "jpeg-progressive-10-scans",
            "guarded",
            raw(lambda: encoded("JPEG", progressive=True)),
            200,
            None,
        ),
        Case("jpeg-200-scans", "guarded", raw(lambda: jpeg_with_scans(200)), 200, None),
        Case(
            "gif-20000-tiny-frames",
            "guarded",
            raw(lambda: gif_tiny_frames(20_000), "image/gif"),
            200,
            None,
            check=tiny_frames_sampled_early,
        ),
        Case("tiff-3-pages", "guarded", raw(lambda: tiff_pages(3), "image/tiff"), 200, None),
        Case(
            "tiff-20000-pages",
            "guarded",
            raw(lambda: tiff_pages(20_000), "image/tiff"),
            422,
            too_large,
        ),
        Case(
            "jpeg-20000-scans-cpu-bomb",
            "guarded",
            raw(lambda: jpeg_with_scans(20_000, (4000, 3000))),
            422,
            too_large,
        ),
        Case(
            "jpeg-63mp-reference",
            "guarded",
            raw(huge_jpeg, preprocessing="reference"),
            422,
            too_large,
        ),
    ]
    return cases


def nested() -> bytes:
    return b"[" * 200_000 + b"]" * 200_000


BINARY_EVENT = {
    "ce-specversion": "1.0",
    "ce-id": "nested-1",
    "ce-source": "/hostile",
    "ce-type": "org.example.upload",
    "Content-Type": "application/json",
}


def other_cases() -> list[Case]:
    jpeg = lambda: encoded("JPEG")  # noqa: E731
    cases = [
        Case(
            f"not-ours-{name}",
            "guarded",
            raw(lambda b=body: b, "image/jpeg"),
            415,
            "unsupported_media_type",
        )
        for name, body in NOT_OURS.items()
    ]
    cases += [
        Case(
            f"not-ours-{name}",
            "guarded",
            raw(lambda f=fmt: encoded(f), "image/x-icon"),
            415,
            "unsupported_media_type",
        )
        for name, fmt in PILLOW_ONLY.items()
    ]
    cases += [
        Case(
            "png-magic-then-postscript",
            "guarded",
            raw(lambda: b"\x89PNG\r\n\x1a\n" + NOT_OURS["eps"], "image/png"),
            422,
            "undecodable_image",
        ),
        Case(
            "gif-magic-then-postscript",
            "guarded",
            raw(lambda: b"GIF89a" + NOT_OURS["eps"], "image/gif"),
            422,
            "undecodable_image",
        ),
        Case("zero-bytes", "guarded", raw(lambda: b""), 400, "invalid_request"),
        # JSON nested deeper than the parser's stack, on every door that reads JSON.
        Case(
            "json-nested-400kb", "guarded", raw(nested, "application/json"), 400, "invalid_request"
        ),
        Case(
            "changeprop-nested-400kb",
            "guarded",
            raw(lambda: b'{"event": ' + nested() + b"}", "application/json"),
            400,
            "invalid_request",
        ),
        Case(
            "structured-event-nested-400kb",
            "guarded",
            raw(nested, "application/cloudevents+json"),
            400,
            "invalid_request",
        ),
        Case(
            "binary-event-nested-data",
            "guarded",
            lambda host: {"data": nested(), "headers": BINARY_EVENT},
            400,
            "invalid_request",
        ),
        Case(
            "batch-over-the-cap",
            "guarded",
            lambda host: {"json": {"urls": [f"https://{PUBLIC}/{i}.jpg" for i in range(17)]}},
            400,
            "invalid_request",
        ),
        Case(
            "jpeg-as-text-plain", "guarded", raw(jpeg, "text/plain"), 415, "unsupported_media_type"
        ),
        Case(
            "jpeg-as-application-pdf",
            "guarded",
            raw(jpeg, "application/pdf"),
            415,
            "unsupported_media_type",
        ),
        Case("jpeg-as-text-html", "guarded", raw(jpeg, "text/html"), 415, "unsupported_media_type"),
        Case("jpeg-as-json", "guarded", raw(jpeg, "application/json"), 400, "invalid_request"),
        Case(
            "jpeg-as-form",
            "guarded",
            raw(jpeg, "application/x-www-form-urlencoded"),
            400,
            "invalid_request",
        ),
        Case("jpeg-without-content-type", "guarded", raw(jpeg, ""), 400, "invalid_request"),
        Case(
            "multipart-empty-file",
            "guarded",
            lambda h: {
                "data": {"file": (io.BytesIO(b""), "x.jpg")},
                "content_type": "multipart/form-data",
            },
            400,
            "invalid_request",
        ),
        Case(
            "multipart-wrong-field",
            "guarded",
            lambda h: {
                "data": {"image": (io.BytesIO(encoded("JPEG")), "x.jpg")},
                "content_type": "multipart/form-data",
            },
            400,
            "invalid_request",
        ),
        Case(
            "multipart-eps-file",
            "guarded",
            lambda h: {
                "data": {"file": (io.BytesIO(NOT_OURS["eps"]), "x.jpg")},
                "content_type": "multipart/form-data",
            },
            415,
            "unsupported_media_type",
        ),
        Case(
            "json-url-not-a-string",
            "guarded",
            lambda h: {"json": {"url": ["x"]}},
            400,
            "invalid_request",
        ),
    ]
    return cases


SPELLED_LOOPBACK = [
    "127.0.0.1", "localhost", "2130706433", "0177.0.0.1", "0x7f.1", "0x7f000001", "127.1",
    "0.0.0.0", "0", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::1]",
]  # fmt: skip
PRIVATE_TARGETS = [
    "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1", "224.0.0.1",
    "240.0.0.1", "255.255.255.255", "[fe80::1]", "[fc00::1]", "[64:ff9b::7f00:1]",
    "[2002:7f00:1::1]", "[2001::1]", "internal.test", "mixed.test",
]  # fmt: skip
REFUSED = "source_not_allowed"


def url_cases() -> list[Case]:
    cases: list[Case] = []
    for i, spelling in enumerate(SPELLED_LOOPBACK):
        path = f"/hostile/loopback-{i}"

        def make(host: ImageHost, spelling: str = spelling, path: str = path) -> str:
            host.file(path, encoded("JPEG"))
            return f"http://{spelling}:{host.port}{path}"

        cases.append(
            Case(
                f"url-loopback-{spelling}", "guarded", url_of(make), 422, REFUSED, forbidden=(path,)
            )
        )
    for target in PRIVATE_TARGETS:
        cases.append(
            Case(
                f"url-private-{target}",
                "guarded",
                url_of(lambda h, t=target: f"http://{t}:{h.port}/latest/meta-data/"),
                422,
                REFUSED,
                forbidden=("/latest/meta-data/",),
            )
        )

    def public(host: ImageHost, path: str) -> str:
        return f"http://public.test:{host.port}{path}"

    def public_image(host: ImageHost) -> str:
        host.file("/hostile/public.jpg", encoded("JPEG"))
        return public(host, "/hostile/public.jpg")

    def redirect_to(location: Callable[[ImageHost], str], name: str) -> Any:
        def make(host: ImageHost) -> str:
            host.file("/hostile/secret", b"instance credentials", content_type="text/plain")
            host.redirect(f"/hostile/redirect-{name}", location(host))
            return public(host, f"/hostile/redirect-{name}")

        return url_of(make)

    cases += [
        Case("url-public-name-control", "guarded", url_of(public_image), 200, None),
        Case(
            "url-redirect-public-to-loopback",
            "guarded",
            redirect_to(lambda h: h.url("/hostile/secret"), "loopback"),
            422,
            REFUSED,
            forbidden=("/hostile/secret",),
        ),
        Case(
            "url-redirect-public-to-metadata",
            "guarded",
            redirect_to(lambda h: f"http://169.254.169.254:{h.port}/hostile/secret", "meta"),
            422,
            REFUSED,
            forbidden=("/hostile/secret",),
        ),
        Case(
            "url-redirect-public-to-localhost-decimal",
            "guarded",
            redirect_to(lambda h: f"http://2130706433:{h.port}/hostile/secret", "decimal"),
            422,
            REFUSED,
            forbidden=("/hostile/secret",),
        ),
        Case(
            "url-redirect-public-to-private-name",
            "guarded",
            redirect_to(lambda h: f"http://internal.test:{h.port}/hostile/secret", "name"),
            422,
            REFUSED,
            forbidden=("/hostile/secret",),
        ),
        Case(
            "url-redirect-public-to-file",
            "guarded",
            redirect_to(lambda h: "file:///etc/passwd", "file"),
            422,
            REFUSED,
        ),
        Case("url-scheme-file", "guarded", url_of(lambda h: "file:///etc/passwd"), 422, REFUSED),
        Case(
            "url-scheme-gopher",
            "guarded",
            url_of(lambda h: f"gopher://127.0.0.1:{h.port}/_GET%20/"),
            422,
            REFUSED,
        ),
        Case(
            "url-scheme-ftp", "guarded", url_of(lambda h: "ftp://example.org/x.jpg"), 422, REFUSED
        ),
        Case(
            "url-userinfo",
            "guarded",
            url_of(lambda h: f"http://admin:admin@public.test:{h.port}/x.jpg"),
            422,
            REFUSED,
        ),
        Case(
            "url-too-long", "guarded", url_of(lambda h: public(h, "/" + "a" * 3000)), 422, REFUSED
        ),
    ]

    def misbehaving(name: str, make: Callable[[ImageHost], str], status: int, code: str) -> Case:
        return Case(f"url-{name}", "permissive", url_of(make), status, code)

    body = encoded("JPEG", photo((400, 300)))
    cases += [
        misbehaving(
            "redirect-loop",
            lambda h: h.redirect("/hostile/loop", "/hostile/loop"),
            422,
            "too_many_redirects",
        ),
        misbehaving(
            "redirect-ping-pong",
            lambda h: (
                h.redirect("/hostile/ping", "/hostile/pong"),
                h.redirect("/hostile/pong", "/hostile/ping"),
            )[0],
            422,
            "too_many_redirects",
        ),
        misbehaving(
            "slow-drip-body",
            lambda h: h.drip("/hostile/drip", body, chunk=50, interval=0.2),
            504,
            "source_timeout",
        ),
        misbehaving(
            "never-answers", lambda h: h.hang("/hostile/hang", seconds=4), 504, "source_timeout"
        ),
        misbehaving(
            "slow-drip-headers",
            lambda h: h.route("/hostile/drip-headers", drip_headers),
            504,
            "source_timeout",
        ),
        misbehaving(
            "endless-body",
            lambda h: h.endless("/hostile/endless", limit=16 << 20),
            422,
            "source_too_large",
        ),
        misbehaving(
            "content-length-10-gib",
            lambda h: h.lying_length("/hostile/claims-huge", body, claimed=10 << 30),
            422,
            "source_too_large",
        ),
        misbehaving(
            "content-length-short-body",
            lambda h: h.lying_length("/hostile/short", body[:300], claimed=len(body)),
            502,
            "source_unavailable",
        ),
        misbehaving(
            "gzip-bomb",
            lambda h: h.gzip_bomb("/hostile/gzip-bomb", 32 << 20),
            422,
            "source_too_large",
        ),
        misbehaving(
            "source-404",
            lambda h: h.file("/hostile/404", b"", status=404, content_type="text/plain"),
            422,
            "source_not_found",
        ),
        misbehaving(
            "source-429",
            lambda h: h.file("/hostile/429", b"", status=429, content_type="text/plain"),
            503,
            "source_unavailable",
        ),
        misbehaving(
            "source-serves-eps",
            lambda h: h.file("/hostile/eps", NOT_OURS["eps"], content_type="image/jpeg"),
            415,
            "unsupported_media_type",
        ),
        misbehaving(
            "source-serves-png-bomb",
            lambda h: h.file("/hostile/png-bomb", png_declaring(100_000, 100_000)),
            422,
            "image_too_large",
        ),
    ]
    return cases


def drip_headers(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for i in range(40):
        handler.wfile.write(f"X-Drip-{i}: x\r\n".encode())
        handler.wfile.flush()
        time.sleep(0.3)


CASES = image_cases() + other_cases() + url_cases()


def test_the_table_covers_every_class() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)
    statuses = {case.status for case in CASES}
    assert {200, 400, 415, 422, 502, 503, 504} <= statuses


# --- apps ----------------------------------------------------------------------------------
class ScriptedNetwork:
    """Scripted DNS for ``*.test`` names (the real resolver for the rest); dialling the
    public address reaches the loopback image host, and every dial is recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dialled: list[str] = []
        self.answers = {
            "public.test": [PUBLIC],
            "internal.test": ["10.0.0.7"],
            "mixed.test": [PUBLIC, "127.0.0.1"],
        }

    def resolve(self, host: str, port: int) -> list[str]:
        if host.endswith(".test"):
            if host not in self.answers:
                raise socket.gaierror(f"{host}: unknown")
            return self.answers[host]
        return system_resolver(host, port)

    def connect(self, address: tuple[str, int], timeout: float | None) -> socket.socket:
        self.dialled.append(address[0])
        if address[0] == PUBLIC:
            return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        raise ConnectionRefusedError(f"not routed in the test network: {address[0]}")


@pytest.fixture(scope="module")
def network(image_host: ImageHost) -> ScriptedNetwork:
    return ScriptedNetwork(image_host.port)


@pytest.fixture(scope="module")
def guarded(network: ScriptedNetwork) -> Iterator[Flask]:
    app = start_app(make_app(NSFWOID_ALLOW_PRIVATE_NETWORKS="false", **FAST_FETCH))
    service = app.extensions["nsfwoid"]
    # The production fetcher, on the test's network: same code, settings and guard.
    service.fetcher.close()
    policy = AddressPolicy(allow_private=False, resolver=network.resolve, connector=network.connect)
    service.fetcher = service.pipeline.fetcher = Fetcher(service.settings, policy=policy)
    yield app
    service.stop()


@pytest.fixture(scope="module")
def permissive(image_host: ImageHost) -> Iterator[Flask]:
    app = start_app(make_app(NSFWOID_ALLOW_PRIVATE_NETWORKS="true", **FAST_FETCH))
    yield app
    app.extensions["nsfwoid"].stop()


@pytest.mark.model
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input(
    case: Case, request: pytest.FixtureRequest, image_host: ImageHost, network: ScriptedNetwork
) -> None:
    app: Flask = request.getfixturevalue(case.app)
    client = app.test_client()
    kwargs = case.request(image_host)
    before = {path: image_host.hits_for(path) for path in case.forbidden}
    dialled = len(network.dialled)

    response = client.post("/", **kwargs)

    if response.mimetype == "text/plain":  # the form door answers as the old service did
        text = response.get_data(as_text=True).strip()
        code = text.split(": ", 2)[1] if text.startswith("error: ") else None
        payload = {"error": {"code": code}, "request_id": response.headers["X-Request-Id"]}
    else:
        payload = response.get_json()
    assert response.status_code == case.status, payload
    if case.code is None:
        assert 0.0 <= payload["score"] <= 1.0
        if case.check is not None:
            case.check(payload)
    else:
        assert payload["error"]["code"] == case.code, payload
        assert payload["request_id"] == response.headers["X-Request-Id"]
    if case.status in (502, 503, 504):
        assert int(response.headers["Retry-After"]) >= 1
    for path in case.forbidden:
        assert image_host.hits_for(path) == before[path], f"{path} was fetched"
    # Whatever the test network was asked to dial was public (the guard's verdict).
    assert all(address == PUBLIC for address in network.dialled[dialled:])
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()


# --- body caps ---------------------------------------------------------------------------
def test_raw_body_over_the_cap_is_413(guarded: Flask) -> None:
    client = guarded.test_client()
    response = client.post("/", data=b"\xff\xd8\xff" + b"\0" * BODY_CAP, content_type="image/jpeg")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert client.get("/readyz").status_code == 200


def test_multipart_body_over_the_cap_is_413(guarded: Flask) -> None:
    client = guarded.test_client()
    # Encoded here, not by the test client (which spools big uploads to a file it leaves open).
    body = b"".join(chunked_multipart()) + b"\0" * BODY_CAP
    response = client.post("/", data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"


def test_form_url_over_the_cap_is_413(guarded: Flask) -> None:
    client = guarded.test_client()
    response = client.post("/", data={"url": "http://x/" + "a" * BODY_CAP})
    assert response.status_code == 413


def chunked_post(
    port: int, content_type: str, body_chunks: Iterator[bytes], extra_headers: bytes = b""
) -> bytes:
    """POST with Transfer-Encoding: chunked over a raw socket, stopping when the server
    answers or hangs up; returns what the server sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: "
            + content_type.encode()
            + b"\r\nConnection: close\r\n"
            + extra_headers
            + b"\r\n"
        )
        try:
            for chunk in body_chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: its answer is what matters
        received = b""
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
        except ConnectionResetError:
            pass
    return received


CHUNKED_CAP = 300_000
BOUNDARY = "xBOUNDARYx"


def filler() -> Iterator[bytes]:
    for _ in range(64):  # 4 MiB, far past the cap, in 64 KiB chunks
        yield b"\0" * 65536


def chunked_raw() -> Iterator[bytes]:
    yield b"\xff\xd8\xff"
    yield from filler()


def chunked_multipart() -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff'
    ).encode("latin-1")
    yield from filler()
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def chunked_json() -> Iterator[bytes]:
    yield b'{"url": "http://example.org/'
    for chunk in filler():
        yield chunk.replace(b"\0", b"a")
    yield b'"}'


def chunked_form() -> Iterator[bytes]:
    yield b"url=http://example.org/"
    for chunk in filler():
        yield chunk.replace(b"\0", b"a")


CLOUDEVENT = b"ce-specversion: 1.0\r\nce-id: chunked-1\r\nce-source: /test\r\nce-type: t\r\n"
CHUNKED = {
    "raw": ("image/jpeg", chunked_raw, b""),
    "multipart": (f"multipart/form-data; boundary={BOUNDARY}", chunked_multipart, b""),
    "json": ("application/json", chunked_json, b""),
    "form": ("application/x-www-form-urlencoded", chunked_form, b""),
    "cloudevent": ("image/jpeg", chunked_raw, CLOUDEVENT),
}


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_server(
        tmp_path_factory.mktemp("capped"), NSFWOID_MAX_BODY_BYTES=str(CHUNKED_CAP)
    ) as server:
        yield server


@pytest.mark.parametrize("kind", list(CHUNKED))
def test_chunked_bodies_over_the_cap_are_413_on_the_real_server(
    capped_server: Any, kind: str
) -> None:
    # No Content-Length: the cap can only be enforced while reading.
    content_type, chunks, headers = CHUNKED[kind]
    answer = chunked_post(capped_server.port, content_type, chunks(), headers)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"payload_too_large" in answer  # JSON, or plain text for the form door
    assert requests.get(capped_server.url + "/readyz", timeout=5).status_code == 200


def test_chunked_body_under_the_cap_is_scored_on_the_real_server(capped_server: Any) -> None:
    small = encoded("JPEG")
    answer = chunked_post(capped_server.port, "image/jpeg", iter([small[:1000], small[1000:]]))
    assert answer.split(b"\r\n", 1)[0].startswith(b"HTTP/1.1 200"), answer[:300]


def test_jpeg_scan_limit_is_exact() -> None:
    """256 scans decode (a rare but possible file), 257 are refused before any decoding."""
    for mode in ("standard", "reference"):
        decoded = decode(
            jpeg_with_scans(MAX_JPEG_SCANS), mode=mode, max_pixels=50_000_000, max_frames=8
        )
        assert decoded.frames[0].size == (640, 480)
        with pytest.raises(ImageTooLarge, match=f"{MAX_JPEG_SCANS + 1} scans"):
            decode(
                jpeg_with_scans(MAX_JPEG_SCANS + 1), mode=mode, max_pixels=50_000_000, max_frames=8
            )


def test_tiff_page_limit_is_exact() -> None:
    """1000 pages decode, 1001 are refused, counted without parsing a single page."""
    for mode in ("standard", "reference"):
        decoded = decode(
            tiff_pages(MAX_FRAMES_WALKED), mode=mode, max_pixels=50_000_000, max_frames=8
        )
        assert decoded.frames_total == MAX_FRAMES_WALKED
        with pytest.raises(ImageTooLarge, match=f"more than {MAX_FRAMES_WALKED} pages"):
            decode(
                tiff_pages(MAX_FRAMES_WALKED + 1), mode=mode, max_pixels=50_000_000, max_frames=8
            )
