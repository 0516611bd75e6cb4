"""CloudEvents in, a scored CloudEvent back: real events from the SDK against the real function.

Events are built with the ``cloudevents`` SDK and replies parsed back with its ``from_http``.
(``cloudevents.http.to_binary``/``to_structured`` are deprecated aliases that warn, which this
suite turns into errors; ``cloudevents.conversion`` holds the same functions.) Image URLs point
at the loopback image host; every test uses its own paths and event ids, so the shared app's
duplicate cache never links two tests.
"""

from __future__ import annotations

import base64
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.conftest import make_app, running_server, start_app
from tests.ecs import entries, field
from tests.imagehost import ImageHost
from tests.photos import photo_bytes, photo_jpeg

UPLOADED = "org.nsfwoid.image.uploaded"
SCORED = "org.nsfwoid.image.scored"
STRUCTURED = "application/cloudevents+json"
RETRYABLE = {404, 409, 429} | set(range(500, 600))  # Knative Eventing's retry rule

# What a wiki would want echoed: nested objects, Unicode, integers and floats, null, booleans.
ECHO = {
    "title": "File:Łódź – 日本語 ✓.jpg",
    "revid": 123456789012,
    "ratio": 0.1,
    "meta": {"tags": ["a", {"b": None}], "ok": True, "big": 2**63 + 1},
}


def new_id() -> str:
    return uuid.uuid4().hex


def event(data: Any, *, id: str | None = None, **attributes: Any) -> CloudEvent:  # noqa: A002
    attrs = {"type": UPLOADED, "source": "/wiki/uploads", "id": id or new_id()}
    return CloudEvent(attrs | attributes, data)


def post(
    client: FlaskClient, headers: dict[str, str], body: bytes | str | None
) -> tuple[int, dict[str, str], bytes]:
    response = client.post("/", headers=headers, data=body)
    return response.status_code, dict(response.headers), response.get_data()


def send(
    client: FlaskClient, ce: CloudEvent, structured: bool = False
) -> tuple[int, dict[str, str], bytes]:
    headers, body = to_structured(ce) if structured else to_binary(ce)
    return post(client, dict(headers), body)


def parse_reply(headers: dict[str, str], body: bytes) -> CloudEvent:
    """The reply as the SDK reads it, with the binding's percent-encoding of ce-* undone."""
    decoded = {k: unquote(v) if k.lower().startswith("ce-") else v for k, v in headers.items()}
    reply = from_http(decoded, body)
    assert isinstance(reply, CloudEvent)
    return reply


def data_of(reply: CloudEvent) -> dict[str, Any]:
    data = reply.get_data()
    assert isinstance(data, dict), data
    return data


def is_structured(headers: dict[str, str]) -> bool:
    lower = {k.lower(): v for k, v in headers.items()}
    structured = lower.get("content-type", "").startswith(STRUCTURED)
    # Binary mode carries the attributes as headers; structured carries none of them.
    assert ("ce-specversion" in lower) is not structured, headers
    return structured


def error_of(status: int, headers: dict[str, str], body: bytes) -> str:
    """The JSON error shape's code, checking the shape and the retry hint on the way."""
    payload = json.loads(body)
    assert set(payload) == {"error", "request_id"}
    assert set(payload["error"]) == {"code", "message"} and payload["error"]["message"]
    assert payload["request_id"] == headers["X-Request-Id"]
    assert ("Retry-After" in headers) is (status in RETRYABLE), (status, headers)
    return str(payload["error"]["code"])


def plain_score(client: FlaskClient, **kwargs: Any) -> dict[str, Any]:
    response = client.post("/", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()
    assert isinstance(result, dict)
    return result


@pytest.fixture()
def photo_url(image_host: ImageHost) -> Iterator[tuple[str, str, bytes]]:
    """A fresh URL of a real photo: (path, url, bytes)."""
    path = f"/events/{new_id()}.jpg"
    body = photo_jpeg("astronaut", (320, 320))
    yield path, image_host.file(path, body), body


# --- success: attributes, data, mode symmetry ----------------------------------------------


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_url_event_gets_scored_event_in_same_mode(
    client: FlaskClient, image_host: ImageHost, photo_url: tuple[str, str, bytes], structured: bool
) -> None:
    path, url, body = photo_url
    incoming = event({"url": url} | ECHO)
    status, headers, payload = send(client, incoming, structured)
    assert status == 200, payload
    assert is_structured(headers) is structured
    reply = parse_reply(headers, payload)

    assert reply["specversion"] == "1.0"
    assert reply["type"] == SCORED
    assert reply["source"] == "/nsfwoid"  # no K_SERVICE/K_REVISION in the test app
    assert reply["subject"] == url
    assert reply["datacontenttype"] == "application/json"
    assert reply["id"] and reply["id"] != incoming["id"]

    data = data_of(reply)
    plain = plain_score(client, json={"url": url})
    assert data["score"] == plain["score"]  # same number as the plain HTTP path, bit for bit
    assert math.isfinite(data["score"]) and 0 <= data["score"] <= 1
    assert data["image"] == {
        key: plain["image"][key]
        for key in ("sha1", "sha1_base36", "format", "width", "height", "frames", "truncated")
    } | {"url": url}
    assert data["image"]["width"] == 320 and data["image"]["format"] == "JPEG"
    assert set(data["model"]) >= {"name", "version", "sha256"}
    assert data["model"] == plain["model"]
    assert data["preprocessing"] == "standard"
    assert data["echo"] == ECHO  # untouched: nested, Unicode, big ints, floats, null, bools
    assert data["event"] == {"id": incoming["id"], "source": "/wiki/uploads", "type": UPLOADED}
    assert "frame_scores" not in data  # a still image
    assert image_host.hits_for(path) == 2  # the event's fetch and the plain request's


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured-base64"])
def test_inline_image_event_echoes_extensions(client: FlaskClient, structured: bool) -> None:
    image = photo_bytes("coffee")  # a PNG, as shipped
    incoming = event(
        image,
        datacontenttype="image/png",
        title="Łódź.png",
        revid="42",
        # Added by the broker on the way, per delivery: not the producer's to echo.
        knativearrivaltime="2024-01-01T00:00:00Z",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    headers, body = to_structured(incoming) if structured else to_binary(incoming)
    if structured:
        assert json.loads(body)["data_base64"] == base64.b64encode(image).decode()
    else:
        assert body == image
    status, reply_headers, payload = post(client, dict(headers), body)
    assert status == 200, payload
    assert is_structured(reply_headers) is structured
    reply = parse_reply(reply_headers, payload)
    data = data_of(reply)

    plain = plain_score(client, data=image, content_type="image/png")
    assert data["score"] == plain["score"]
    assert reply["subject"] == plain["image"]["sha1"]  # no URL: the image's SHA-1
    assert data["image"]["url"] is None
    assert data["image"]["sha1"] == plain["image"]["sha1"]
    assert data["image"]["format"] == "PNG"
    assert data["echo"] == {"title": "Łódź.png", "revid": "42"}


def test_preprocessing_in_event_data_matches_plain_path(
    client: FlaskClient, photo_url: tuple[str, str, bytes]
) -> None:
    _, url, _ = photo_url
    status, headers, payload = send(client, event({"url": url, "preprocessing": "reference"}))
    assert status == 200, payload
    data = data_of(parse_reply(headers, payload))
    plain = plain_score(client, json={"url": url, "preprocessing": "reference"})
    assert data["preprocessing"] == "reference" == plain["preprocessing"]
    assert data["score"] == plain["score"]
    assert "preprocessing" not in data["echo"]


def test_reply_id_is_deterministic_per_source_and_id(
    client: FlaskClient, image_host: ImageHost, photo_url: tuple[str, str, bytes]
) -> None:
    _, url, _ = photo_url
    event_id = new_id()

    def reply_id(source: str, structured: bool) -> str:
        status, headers, payload = send(
            client, event({"url": url}, id=event_id, source=source), structured
        )
        assert status == 200, payload
        return str(parse_reply(headers, payload)["id"])

    first = reply_id("/a", False)
    # The other mode is a separate cache entry (its reply is shaped differently) but it is the
    # same event, so the sink sees the same reply id.
    assert reply_id("/a", True) == first
    assert reply_id("/b", False) != first
    assert len({first, reply_id("/a", False)}) == 1
    assert uuid.UUID(first).version == 5


def test_unicode_url_and_percent_encoded_extensions(
    client: FlaskClient, image_host: ImageHost
) -> None:
    name = f"Łódź-日本-{new_id()}.jpg"
    image_host.file("/events/" + quote(name), photo_jpeg("chelsea", (128, 96)))
    url = image_host.url("/events/" + name)
    headers, body = to_binary(event({"url": url}))
    # Spec-conformant producers (Knative's Go SDK) percent-encode header values as UTF-8.
    headers["ce-note"] = quote("zażółć gęślą", safe="")
    headers["ce-source"] = quote("/wiki/Łódź", safe="")
    status, reply_headers, payload = post(client, dict(headers), body)
    assert status == 200, payload
    # Every ce-* header of the reply is printable ASCII, whatever the URL holds.
    for key, value in reply_headers.items():
        if key.lower().startswith("ce-"):
            assert value.isascii() and value.isprintable() and " " not in value, (key, value)
    reply = parse_reply(reply_headers, payload)
    assert reply["subject"] == url
    data = data_of(reply)
    assert data["image"]["url"] == url and data["image"]["width"] == 128
    assert data["event"]["source"] == "/wiki/Łódź"
    assert data["echo"] == {}  # JSON data: extensions are not echoed, data fields are


# --- failures: status codes and Knative's retry rule ----------------------------------------


def _binary(data: bytes, content_type: str = "application/json", **extra: str) -> dict[str, Any]:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": new_id(),
        "ce-source": "/wiki/uploads",
        "ce-type": UPLOADED,
        "Content-Type": content_type,
    } | extra
    return {"headers": headers, "body": data}


def _structured(envelope: dict[str, Any] | bytes) -> dict[str, Any]:
    if isinstance(envelope, dict):
        envelope = json.dumps(
            {"specversion": "1.0", "id": new_id(), "source": "/s", "type": UPLOADED} | envelope
        ).encode()
    return {"headers": {"Content-Type": STRUCTURED}, "body": envelope}


MALFORMED = {
    "binary missing ce-id": {
        "headers": {
            "ce-specversion": "1.0",
            "ce-source": "/s",
            "ce-type": UPLOADED,
            "Content-Type": "application/json",
        },
        "body": b'{"url": "http://127.0.0.1/x.jpg"}',
    },
    "binary empty ce-id": _binary(b'{"url": "http://127.0.0.1/x.jpg"}', **{"ce-id": ""}),
    "binary unknown specversion": _binary(b'{"url": "x"}', **{"ce-specversion": "2.0"}),
    "binary bad JSON": _binary(b'{"url": '),
    "binary data not UTF-8": _binary(b"\xff\xfe{}"),
    "binary data a list": _binary(b'["http://127.0.0.1/x.jpg"]'),
    "binary no data": _binary(b""),
    "binary no url": _binary(b'{"title": "File:X.jpg"}'),
    "binary url not a string": _binary(b'{"url": 7}'),
    "binary NaN in data": _binary(b'{"url": "http://127.0.0.1/x.jpg", "n": NaN}'),
    "binary overflowing float": _binary(b'{"url": "http://127.0.0.1/x.jpg", "n": 1e400}'),
    "binary bad preprocessing": _binary(b'{"url": "http://127.0.0.1/x.jpg", "preprocessing": 1}'),
    "binary empty image": _binary(b"", "image/jpeg"),
    "structured bad JSON": _structured(b'{"specversion": "1.0", "id": '),
    "structured not an object": _structured(b'["specversion"]'),
    "structured missing id": _structured(b'{"specversion": "1.0", "source": "/s", "type": "t"}'),
    "structured source not a string": _structured({"source": {"a": 1}, "data": {"url": "x"}}),
    "structured data a string": _structured({"data": "http://127.0.0.1/x.jpg"}),
    "structured no data": _structured({}),
    "structured image in data, not data_base64": _structured(
        {"datacontenttype": "image/jpeg", "data": "/9j/4AAQ"}
    ),
    "structured data_base64 not base64": _structured(
        {"datacontenttype": "image/jpeg", "data_base64": 5}
    ),
    # Past MAX_ATTRIBUTE_CHARS (2048): they would key the duplicate cache and fill every log.
    "binary ce-id of 2049 characters": _binary(
        b'{"url": "http://127.0.0.1/x.jpg"}', **{"ce-id": "i" * 2049}
    ),
    "structured source of 1 MB": _structured(
        {"source": "/" + "s" * 1_000_000, "data": {"url": "http://127.0.0.1/x.jpg"}}
    ),
    "structured type of 3000 characters": _structured(
        {"type": "t" * 3000, "data": {"url": "http://127.0.0.1/x.jpg"}}
    ),
}


@pytest.mark.parametrize("request_", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_events_are_400_and_not_retried(
    client: FlaskClient, request_: dict[str, Any]
) -> None:
    status, headers, body = post(client, request_["headers"], request_["body"])
    assert status == 400, body
    assert error_of(status, headers, body) == "invalid_request"


def test_attributes_up_to_the_length_limit_are_accepted(client: FlaskClient) -> None:
    image = photo_jpeg("coffee", (64, 48))
    long_id, long_source = "i" * 2048, "/" + "s" * 2047
    incoming = event(image, id=long_id, source=long_source, datacontenttype="image/jpeg")
    status, headers, body = send(client, incoming, structured=True)
    assert status == 200, body
    assert data_of(parse_reply(headers, body))["event"] == {
        "id": long_id,
        "source": long_source,
        "type": UPLOADED,
    }


def test_unaccepted_data_type_is_415(client: FlaskClient) -> None:
    status, headers, body = post(client, **_binary(b"http://127.0.0.1/x.jpg", "text/plain"))
    assert status == 415 and error_of(status, headers, body) == "unsupported_media_type"


def test_undecodable_bytes_are_422(client: FlaskClient, image_host: ImageHost) -> None:
    status, headers, body = send(
        client, event(b"GIF89a but not really", datacontenttype="image/gif")
    )
    assert status == 422 and error_of(status, headers, body) == "undecodable_image"
    # The same, fetched by URL: the first 20 bytes of a real JPEG.
    broken = photo_jpeg("astronaut", (64, 64))[:20]
    url = image_host.file(f"/events/{new_id()}.jpg", broken)
    status, headers, body = send(client, event({"url": url}), structured=True)
    assert status == 422 and error_of(status, headers, body) == "undecodable_image"


def test_not_an_image_format_is_415_not_retried(client: FlaskClient, image_host: ImageHost) -> None:
    # A web page where an image was promised: no image format at all, as permanent as a 422.
    url = image_host.file(f"/events/{new_id()}.jpg", b"<html>hello</html>", "text/html")
    status, headers, body = send(client, event({"url": url}))
    assert status == 415 and error_of(status, headers, body) == "unsupported_media_type"


def test_refused_url_scheme_is_422_without_a_connection(
    client: FlaskClient, image_host: ImageHost
) -> None:
    before = len(image_host.hits)
    for url in (f"ftp://127.0.0.1:{image_host.port}/x.jpg", "file:///etc/passwd"):
        status, headers, body = send(client, event({"url": url}))
        assert status == 422 and error_of(status, headers, body) == "source_not_allowed"
    assert len(image_host.hits) == before


@pytest.mark.parametrize(
    ("route", "expected_status", "code"),
    [
        # A 422 on plain HTTP; here the upload race: retryable.
        ("missing", 503, "source_not_found"),
        ("server_error", 502, "source_unavailable"),
        ("hang", 504, "source_timeout"),
    ],
)
def test_image_host_failures_are_retryable(
    client: FlaskClient, image_host: ImageHost, route: str, expected_status: int, code: str
) -> None:
    path = f"/events/{new_id()}.jpg"
    if route == "server_error":
        image_host.file(path, b"oops", "text/plain", status=500)
    elif route == "hang":
        image_host.hang(path, 3.5)  # longer than the test app's 2 s read timeout
    url = image_host.url(path)
    status, headers, body = send(client, event({"url": url}))
    assert status == expected_status, body
    assert status != 404  # a missing source image must never read as "no such subscriber"
    assert error_of(status, headers, body) == code
    assert int(headers["Retry-After"]) > 0
    assert image_host.hits_for(path) == 1


# --- duplicates and the upload race ---------------------------------------------------------


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_duplicate_delivery_answered_from_cache(
    app: Flask,
    client: FlaskClient,
    image_host: ImageHost,
    photo_url: tuple[str, str, bytes],
    structured: bool,
) -> None:
    path, url, _ = photo_url
    incoming = event({"url": url} | ECHO)
    registry = app.extensions["nsfwoid"].metrics.registry

    def duplicates() -> float:
        return float(registry.get_sample_value("nsfwoid_event_duplicates_total") or 0)

    before = duplicates()
    first = send(client, incoming, structured)
    second = send(client, incoming, structured)
    assert first[0] == second[0] == 200
    assert second[2] == first[2]  # byte-identical reply, ``time`` included
    ce_headers = [
        {k: v for k, v in h.items() if k.lower().startswith("ce-")} for _, h, _ in (first, second)
    ]
    assert ce_headers[0] == ce_headers[1]
    assert image_host.hits_for(path) == 1  # the repeat did not refetch
    assert duplicates() == before + 1


def test_duplicate_of_permanent_failure_gets_same_answer(
    client: FlaskClient, image_host: ImageHost
) -> None:
    path = f"/events/{new_id()}.jpg"
    url = image_host.file(path, b"\x89PNG\r\n\x1a\n truncated nonsense", "image/png")
    incoming = event({"url": url})
    answers = [send(client, incoming) for _ in range(2)]
    for status, headers, body in answers:
        assert status == 422 and error_of(status, headers, body) == "undecodable_image"
    # Each answer carries its own request id; the error itself is the same.
    first, second = (json.loads(body)["error"] for _, _, body in answers)
    assert first == second
    assert image_host.hits_for(path) == 1


def test_oversized_reply_is_not_kept_for_duplicates(
    client: FlaskClient, image_host: ImageHost, photo_url: tuple[str, str, bytes]
) -> None:
    """A 100 KB echo would make 1,024 cached replies 100 MB: such a reply is not cached, so a
    redelivery is scored again, and gets the same reply id and score."""
    path, url, _ = photo_url
    incoming = event({"url": url, "note": "n" * 100_000})
    replies = [parse_reply(*send(client, incoming, structured=True)[1:]) for _ in range(2)]
    assert image_host.hits_for(path) == 2
    assert replies[0]["id"] == replies[1]["id"]
    assert data_of(replies[0])["score"] == data_of(replies[1])["score"]
    assert data_of(replies[0])["echo"] == {"note": "n" * 100_000}


def test_upload_race_heals_by_redelivery(client: FlaskClient, image_host: ImageHost) -> None:
    """The upload event outruns the file: 503 (retryable), not cached, then 200 once it exists."""
    path = f"/events/{new_id()}.jpg"
    url = image_host.url(path)
    incoming = event({"url": url, "title": "File:Race.jpg"})
    for attempt in (1, 2):
        status, headers, body = send(client, incoming)
        assert status == 503 and status in RETRYABLE and int(headers["Retry-After"]) > 0
        assert error_of(status, headers, body) == "source_not_found"
        assert image_host.hits_for(path) == attempt  # a failure is not cached: it refetches
    image_host.file(path, photo_jpeg("rocket", (200, 300)))
    status, headers, body = send(client, incoming)
    assert status == 200, body
    data = data_of(parse_reply(headers, body))
    assert data["image"]["height"] == 300 and data["echo"] == {"title": "File:Race.jpg"}
    assert image_host.hits_for(path) == 3
    # Now the success is what repeats get.
    assert send(client, incoming)[2] == body
    assert image_host.hits_for(path) == 3


# --- the rest of the function is unaffected ------------------------------------------------


def test_plain_requests_are_not_events(
    client: FlaskClient, photo_url: tuple[str, str, bytes]
) -> None:
    _, url, body = photo_url
    # Some ce-* headers but no ce-specversion: not a CloudEvent, so the plain JSON path.
    response = client.post("/", json={"url": url}, headers={"ce-id": "1", "ce-type": "x"})
    assert response.status_code == 200
    result = response.get_json()
    assert set(result) >= {"score", "model", "image", "preprocessing", "request_id"}
    assert not any(k.lower().startswith("ce-") for k in response.headers.keys())
    raw = client.post("/", data=body, content_type="image/jpeg")
    assert raw.status_code == 200 and raw.get_json()["score"] == result["score"]


# --- settings, metrics and logs --------------------------------------------------------------


@pytest.fixture(scope="module")
def knative_app() -> Iterator[Flask]:
    """As Knative Serving runs it, with a small pixel cap and a renamed reply type."""
    application = start_app(
        make_app(
            K_SERVICE="nsfwoid",
            K_REVISION="nsfwoid-00001",
            NSFWOID_EVENT_TYPE="org.example.scored",
            NSFWOID_MAX_PIXELS="40000",
            NSFWOID_MAX_BODY_BYTES="200000",
        )
    )
    yield application
    application.extensions["nsfwoid"].stop()


def test_reply_source_names_service_and_revision(
    knative_app: Flask, photo_url: tuple[str, str, bytes]
) -> None:
    _, url, _ = photo_url
    client = knative_app.test_client()
    small = photo_jpeg("chelsea", (100, 80))  # 8,000 pixels: under the cap
    status, headers, body = send(client, event(small, datacontenttype="image/jpeg"), True)
    assert status == 200, body
    reply = parse_reply(headers, body)
    assert reply["source"] == "/nsfwoid/nsfwoid-00001"
    assert reply["type"] == "org.example.scored"
    # 320×320 = 102,400 pixels: over this app's cap, a permanent 422.
    status, headers, body = send(client, event({"url": url}))
    assert status == 422 and error_of(status, headers, body) == "image_too_large"


def test_event_over_body_limit_is_413(knative_app: Flask) -> None:
    client = knative_app.test_client()
    big = event(b"\xff" * 200_001, datacontenttype="image/jpeg")
    for structured in (False, True):
        status, headers, body = send(client, big, structured)
        assert status == 413 and error_of(status, headers, body) == "payload_too_large"


def test_metrics_count_events_with_id_exemplar(knative_app: Flask, image_host: ImageHost) -> None:
    client = knative_app.test_client()
    source = f"/wiki/{new_id()}"
    ok = event(
        photo_jpeg("motorcycle_left", (120, 90)), datacontenttype="image/jpeg", source=source
    )
    missing = event({"url": image_host.url(f"/events/{new_id()}.jpg")}, source=source)
    assert send(client, ok)[0] == 200
    assert send(client, ok)[0] == 200  # a duplicate: counted as such, not as a second event
    assert send(client, missing)[0] == 503

    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.content_type.startswith("application/openmetrics-text")
    samples = {
        sample.labels["outcome"]: sample
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        if family.name == "nsfwoid_events"
        for sample in family.samples
        if sample.name == "nsfwoid_events_total" and sample.labels.get("source") == source
    }
    assert set(samples) == {"ok", "source_not_found"}
    for outcome, ce in (("ok", ok), ("source_not_found", missing)):
        sample = samples[outcome]
        assert sample.labels == {"type": UPLOADED, "source": source, "outcome": outcome}
        assert sample.value == 1
        assert sample.exemplar is not None and sample.exemplar.labels == {"event_id": ce["id"]}
    duplicates = [
        s
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        if family.name == "nsfwoid_event_duplicates"
        for s in family.samples
        if s.name == "nsfwoid_event_duplicates_total"
    ]
    assert [s.value for s in duplicates] == [1]


@pytest.mark.model
def test_metric_labels_stay_bounded_whatever_the_senders() -> None:
    """Every event naming a new source (or type) must not add a time series for ever."""
    app = start_app(make_app())
    try:
        client = app.test_client()
        for k in range(100):
            refused = event({"url": "ftp://127.0.0.1/x.jpg"}, source=f"/s/{k}", type=f"t.{k % 40}")
            status, headers, body = send(client, refused)
            assert status == 422 and error_of(status, headers, body) == "source_not_allowed"
        metrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        text = metrics.get_data(as_text=True)
        samples = [
            sample
            for family in text_string_to_metric_families(text)
            if family.name == "nsfwoid_events"
            for sample in family.samples
            if sample.name == "nsfwoid_events_total"
        ]
        sources = {s.labels["source"] for s in samples}
        types = {s.labels["type"] for s in samples}
        assert len(sources) == 65 and "other" in sources  # the first 64, then "other"
        assert len(types) == 17 and "other" in types
        assert sum(s.value for s in samples) == 100  # every event still counted
    finally:
        app.extensions["nsfwoid"].stop()


@pytest.mark.model
def test_real_server_binary_event_and_json_logs(tmp_path: Path, image_host: ImageHost) -> None:
    # A non-ASCII file name: the reply's ce-subject header must survive gunicorn's latin-1.
    name = f"Grace_Hopper_ł_{new_id()}.jpg"
    image_host.file("/events/" + quote(name), photo_jpeg("grace_hopper", (256, 256)))
    url = image_host.url("/events/" + name)
    ok = event({"url": url, "revid": 7}, source="/wiki/commons")
    missing = event({"url": image_host.url(f"/events/{new_id()}.jpg")}, source="/wiki/commons")
    with running_server(tmp_path, K_SERVICE="nsfwoid", K_REVISION="nsfwoid-00002") as server:
        headers, body = to_binary(ok)
        with requests.post(server.url + "/", headers=headers, data=body, timeout=30) as response:
            assert response.status_code == 200, response.text
            reply = parse_reply(dict(response.headers), response.content)
        headers, body = to_binary(missing)
        with requests.post(server.url + "/", headers=headers, data=body, timeout=30) as failed:
            assert failed.status_code == 503 and failed.headers["Retry-After"]
            assert failed.json()["error"]["code"] == "source_not_found"
        plain = requests.post(server.url + "/", json={"url": url}, timeout=30)
        with plain:
            assert plain.status_code == 200
            plain_score_value = plain.json()["score"]
    # After the server stopped, its log file is complete.
    assert reply["source"] == "/nsfwoid/nsfwoid-00002" and reply["type"] == SCORED
    assert reply["subject"] == url
    assert "ce-specversion" in {k.lower() for k in response.headers}  # binary in, binary out
    assert data_of(reply)["score"] == plain_score_value
    assert data_of(reply)["echo"] == {"revid": 7}

    lines = entries(server.logs())
    by_id = {
        ce["id"]: [e for e in lines if field(e, "nsfwoid.cloudevent.id") == ce["id"]]
        for ce in (ok, missing)
    }
    (scored,) = by_id[ok["id"]]  # one line for the request, none from gunicorn's access log
    assert scored["message"] == "scored"
    assert field(scored, "nsfwoid.cloudevent.source") == "/wiki/commons"
    assert field(scored, "nsfwoid.cloudevent.type") == UPLOADED
    assert field(scored, "nsfwoid.input") == "event"
    assert field(scored, "http.response.status_code") == 200
    assert field(scored, "nsfwoid.score") == plain_score_value
    (failed_line,) = by_id[missing["id"]]
    assert failed_line["message"].startswith("request failed")
    assert field(failed_line, "http.response.status_code") == 503
    assert field(failed_line, "error.code") == "source_not_found"
    assert field(failed_line, "event.outcome") == "failure"
    assert field(failed_line, "nsfwoid.cloudevent.source") == "/wiki/commons"
    assert field(failed_line, "nsfwoid.cloudevent.type") == UPLOADED
