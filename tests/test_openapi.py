"""The OpenAPI document is the contract: it is valid, served as written, and the real app keeps it.

Every input form and every error class we can provoke here is sent to the real function in
process, and openapi-core validates the real request and response against the document
(schemas are closed with ``additionalProperties: false``, so an undocumented member fails).
Then schemathesis generates requests from the document and checks the answers.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema
import pytest
import schemathesis
import yaml
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import strategies as st
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_spec_validator import validate as validate_spec
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Request, Response

from tests.conftest import ROOT, make_app, start_app
from tests.imagehost import ImageHost
from tests.photos import photo_bytes, photo_jpeg

SPEC_PATH = ROOT / "function" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
# openapi-core reads only application/json as JSON and only text/plain as text; teach it the
# other media types the document names, so that their bodies are validated, not skipped.
CONFIG = Config(
    extra_media_type_deserializers={
        "application/cloudevents+json": lambda raw, **_: json.loads(raw),
        "application/openmetrics-text": lambda raw, **_: raw.decode("utf-8"),
        "application/yaml": lambda raw, **_: yaml.safe_load(raw),
    }
)


def load(spec: dict[str, Any]) -> OpenAPI:
    return OpenAPI.from_dict(copy.deepcopy(spec), config=CONFIG)


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return load(SPEC)


def exchange(client: FlaskClient, method: str = "POST", path: str = "/", **kwargs: Any) -> Any:
    """Send one request to the app; return (the request as sent, the response)."""
    builder = EnvironBuilder(method=method, path=path, **kwargs)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    body = environ["wsgi.input"].read()
    sent = Request({**environ, "wsgi.input": io.BytesIO(body)})
    response = client.open(Request({**environ, "wsgi.input": io.BytesIO(body)}))
    return sent, response


def conforms(
    openapi: OpenAPI, sent: Request, response: TestResponse, *, valid_request: bool | None = True
) -> TestResponse:
    """The response conforms to the document, and the document judges the request as the
    test says (``valid_request``: it conforms, it breaks the document, or not checked)."""
    if valid_request is not None:
        request_errors = list(openapi.iter_request_errors(WerkzeugOpenAPIRequest(sent)))
        assert (not request_errors) == valid_request, request_errors or "the request conforms"
    openapi.validate_response(WerkzeugOpenAPIRequest(sent), WerkzeugOpenAPIResponse(response))
    return response


def call(
    openapi: OpenAPI,
    client: FlaskClient,
    method: str = "POST",
    path: str = "/",
    *,
    status: int,
    valid_request: bool | None = True,
    **kwargs: Any,
) -> TestResponse:
    sent, response = exchange(client, method, path, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    return conforms(openapi, sent, response, valid_request=valid_request)


def error_code(response: TestResponse) -> str:
    if response.mimetype == "text/plain":
        return response.get_data(as_text=True).split(":", 2)[1].strip()
    return str(response.get_json()["error"]["code"])


# --- the document ---------------------------------------------------------------------


def test_spec_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"] == "3.1.0"
    validate_spec(copy.deepcopy(SPEC))


def test_served_documents_are_the_file(client: FlaskClient) -> None:
    as_json = client.get("/openapi.json")
    assert as_json.status_code == 200 and as_json.mimetype == "application/json"
    assert as_json.get_json() == SPEC
    as_yaml = client.get("/openapi.yaml")
    assert as_yaml.status_code == 200 and as_yaml.mimetype == "application/yaml"
    assert as_yaml.get_data(as_text=True) == SPEC_PATH.read_text()


def _examples() -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(where, schema, example value) for every example next to a schema in the document."""

    def resolve(node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            target: Any = SPEC
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any], Any]]:
        if isinstance(node, dict):
            if "schema" in node and isinstance(node["schema"], dict):
                if "example" in node:
                    yield where, node["schema"], node["example"]
                for name, example in (node.get("examples") or {}).items():
                    yield f"{where}/examples/{name}", node["schema"], resolve(example)["value"]
            for key, value in node.items():
                yield from walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from walk(value, f"{where}/{index}")

    yield from walk(SPEC["paths"], "#/paths")
    yield from walk(SPEC["components"]["responses"], "#/components/responses")
    yield from walk(SPEC["components"]["parameters"], "#/components/parameters")
    for name, schema in SPEC["components"]["schemas"].items():
        for index, value in enumerate(schema.get("examples", [])):
            yield f"#/components/schemas/{name}/examples/{index}", schema, value


def test_every_example_matches_its_schema() -> None:
    examples = list(_examples())
    assert len(examples) > 40  # the walk found the examples it is meant to check
    for where, schema, value in examples:
        # The document as root schema: its "#/components/..." references resolve in place.
        root = {**SPEC, **schema}
        validator = jsonschema.Draft202012Validator(
            root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        errors = [error.message for error in validator.iter_errors(value)]
        assert not errors, f"{where}: {errors}"


def test_a_mismatch_fails_validation(openapi: OpenAPI, client: FlaskClient) -> None:
    """The validation used below is strict: a wrong document or response is caught."""
    sent, response = exchange(client, data=photo_jpeg("astronaut"), content_type="image/jpeg")
    assert response.status_code == 200
    conforms(openapi, sent, response)

    def fails(spec: dict[str, Any], response: Response) -> str:
        with pytest.raises(Exception) as caught:
            load(spec).validate_response(
                WerkzeugOpenAPIRequest(sent), WerkzeugOpenAPIResponse(response)
            )
        assert "openapi_core" in type(caught.value).__module__, caught.value
        return repr(caught.value)

    closed = copy.deepcopy(SPEC)  # an undocumented member is refused
    del closed["components"]["schemas"]["ScoreResult"]["properties"]["timing_ms"]
    closed["components"]["schemas"]["ScoreResult"]["required"].remove("timing_ms")
    fails(closed, response)
    bounded = copy.deepcopy(SPEC)  # so is a value out of its range
    bounded["components"]["schemas"]["Score"]["maximum"] = 1e-9
    fails(bounded, response)
    tampered = copy.deepcopy(SPEC)  # and an undocumented status
    del tampered["paths"]["/"]["post"]["responses"]["200"]
    fails(tampered, response)
    # The same answer without its required X-Request-Id header fails too.
    no_id = Response(response.get_data(), status=200, mimetype="application/json")
    assert "X-Request-Id" in fails(SPEC, no_id)


# --- every input form ------------------------------------------------------------------


def test_raw_image_bytes(openapi: OpenAPI, client: FlaskClient) -> None:
    response = call(
        openapi,
        client,
        status=200,
        data=photo_jpeg("astronaut"),
        content_type="image/jpeg",
        headers={"X-Request-Id": "contract-raw-1"},
    )
    body = response.get_json()
    assert body["request_id"] == response.headers["X-Request-Id"] == "contract-raw-1"
    assert "fetch" not in body["timing_ms"] and "frame_scores" not in body
    reference = call(
        openapi,
        client,
        status=200,
        path="/?preprocessing=reference",
        data=photo_bytes("coffee"),
        content_type="application/octet-stream",
    )
    assert reference.get_json()["preprocessing"] == "reference"
    as_text = call(
        openapi,
        client,
        status=200,
        data=photo_jpeg("chelsea"),
        content_type="image/jpeg",
        headers={"Accept": "text/plain"},
    )
    assert as_text.mimetype == "text/plain"


def test_animated_and_truncated_images(openapi: OpenAPI, client: FlaskClient) -> None:
    frames = [Image.new("RGB", (64, 48), (i * 20, 90, 200 - i * 15)) for i in range(12)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    animated = call(openapi, client, status=200, data=gif.getvalue(), content_type="image/gif")
    body = animated.get_json()
    assert len(body["frame_scores"]) == 8 and body["image"]["frames"] == 12
    data = photo_jpeg("astronaut")
    cut = call(
        openapi, client, status=200, data=data[: len(data) * 2 // 3], content_type="image/jpeg"
    )
    assert cut.get_json()["image"]["truncated"] is True


def test_form_url_answers_a_bare_float(
    openapi: OpenAPI, client: FlaskClient, image_host: ImageHost
) -> None:
    url = image_host.file("/contract/form.jpg", photo_jpeg("astronaut"))
    text = call(openapi, client, status=200, data={"url": url})
    assert text.mimetype == "text/plain"
    score = float(text.get_data(as_text=True))
    as_json = call(
        openapi, client, status=200, data={"url": url}, headers={"Accept": "application/json"}
    )
    body = as_json.get_json()
    assert body["score"] == score and "fetch" in body["timing_ms"]


def test_json_url_and_multipart(
    openapi: OpenAPI, client: FlaskClient, image_host: ImageHost
) -> None:
    url = image_host.file("/contract/json.png", photo_bytes("coffee"), content_type="image/png")
    by_url = call(openapi, client, status=200, json={"url": url, "preprocessing": "reference"})
    assert by_url.get_json()["preprocessing"] == "reference"
    upload = call(
        openapi,
        client,
        status=200,
        data={"file": (io.BytesIO(photo_bytes("coffee")), "coffee.png", "image/png")},
        content_type="multipart/form-data",
    )
    field = call(
        openapi,
        client,
        status=200,
        data={"url": url},
        content_type="multipart/form-data",
        query_string={"preprocessing": "reference"},
    )
    assert upload.get_json()["image"]["sha1"] == field.get_json()["image"]["sha1"]


def test_batch_with_a_good_and_a_bad_url(
    openapi: OpenAPI, client: FlaskClient, image_host: ImageHost
) -> None:
    good = image_host.file("/contract/batch.jpg", photo_jpeg("rocket"))
    bad = image_host.url("/contract/never-uploaded.jpg")
    response = call(openapi, client, status=200, json={"urls": [good, bad, "ftp://x/y.jpg"]})
    results = response.get_json()["results"]
    assert [item["url"] for item in results] == [good, bad, "ftp://x/y.jpg"]
    assert "score" in results[0]
    assert (results[1]["status"], results[1]["error"]["code"]) == (422, "source_not_found")
    assert (results[2]["status"], results[2]["error"]["code"]) == (422, "source_not_allowed")


def test_cloudevents_binary_and_structured(
    openapi: OpenAPI, client: FlaskClient, image_host: ImageHost
) -> None:
    url = image_host.file("/contract/event.jpg", photo_jpeg("motorcycle_left"))
    base = {"type": "org.example.upload", "source": "/contract"}

    event = CloudEvent({**base, "id": "contract-b-url"}, {"url": url, "wiki": "en"})
    headers, body = to_binary(event)
    reply = call(openapi, client, status=200, data=body, headers=headers)
    assert reply.headers["ce-type"] == "org.nsfwoid.image.scored"
    assert reply.get_json()["echo"] == {"wiki": "en"}

    attributes = {**base, "id": "contract-b-img", "datacontenttype": "image/jpeg"}
    headers, body = to_binary(CloudEvent(attributes, photo_jpeg("chelsea")))
    reply = call(openapi, client, status=200, data=body, headers=headers)
    assert reply.get_json()["image"]["url"] is None

    event = CloudEvent({**base, "id": "contract-s-url"}, {"url": url, "page": 7})
    headers, body = to_structured(event)
    reply = call(openapi, client, status=200, data=body, headers=headers)
    assert reply.mimetype == "application/cloudevents+json"
    assert reply.get_json()["data"]["echo"] == {"page": 7}

    structured = {
        "specversion": "1.0",
        **base,
        "id": "contract-s-img",
        "datacontenttype": "image/jpeg",
        "preprocessing": "reference",
        "data_base64": base64.b64encode(photo_jpeg("coffee")).decode(),
    }
    reply = call(
        openapi,
        client,
        status=200,
        data=json.dumps(structured),
        content_type="application/cloudevents+json",
    )
    assert reply.get_json()["data"]["preprocessing"] == "reference"

    # A permanent fault of an event is a 4xx (Knative does not retry it).
    event = CloudEvent({**base, "id": "contract-b-ftp"}, {"url": "ftp://example.org/x.jpg"})
    headers, body = to_binary(event)
    refused = call(openapi, client, status=422, data=body, headers=headers)
    assert error_code(refused) == "source_not_allowed"


@pytest.mark.parametrize("missing", ["ce-id", "ce-source", "ce-type"])
def test_incomplete_binary_event_is_a_400(
    openapi: OpenAPI, client: FlaskClient, missing: str
) -> None:
    """Without all four required ``ce-*`` headers the SDK reads the body as a structured
    event; image bytes there are not JSON, and that is the sender's mistake."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "contract-incomplete",
        "ce-source": "/contract",
        "ce-type": "org.example.upload",
        "Content-Type": "image/jpeg",
    }
    del headers[missing]
    malformed = call(openapi, client, status=400, data=photo_jpeg("coffee"), headers=headers)
    assert error_code(malformed) == "invalid_request"


# --- every error class -----------------------------------------------------------------


@pytest.mark.parametrize("body", [b"[null, null]", b'"text"', b"42", b"{not json"])
def test_malformed_structured_event_is_a_400(
    openapi: OpenAPI, client: FlaskClient, body: bytes
) -> None:
    """A structured event body that is no JSON object; with binary-mode ``ce-*`` headers as
    well the SDK still reads the body as the structured event (AttributeError inside it)."""
    for binary_headers in (
        {},
        {"ce-specversion": "1.0", "ce-id": "m-1", "ce-source": "/m", "ce-type": "t"},
    ):
        malformed = call(
            openapi,
            client,
            status=400,
            valid_request=False,
            data=body,
            headers={**binary_headers, "Content-Type": "application/cloudevents+json"},
        )
        assert error_code(malformed) == "invalid_request"


# (request, status, code, does the document already refuse the request?): a request that the
# document allows but the function refuses is a fault of the image or of its source.
MISTAKES = [
    (
        {"data": b"hello, not an image", "content_type": "image/jpeg"},
        415,
        "unsupported_media_type",
        True,
    ),
    ({"data": b"a,b\n1,2\n", "content_type": "text/csv"}, 415, "unsupported_media_type", False),
    (
        {"data": b"\xff\xd8\xff\xe0garbage", "content_type": "image/jpeg"},
        422,
        "undecodable_image",
        True,
    ),
    ({"data": b"{not json", "content_type": "application/json"}, 400, "invalid_request", False),
    ({"json": {"urls": ["http://127.0.0.1/x.jpg"] * 17}}, 400, "invalid_request", False),
    ({"json": {"urls": []}}, 400, "invalid_request", False),
    ({"json": {"nothing": 1}}, 400, "invalid_request", False),
    (
        {"json": {"url": "http://127.0.0.1/x.jpg", "preprocessing": "fancy"}},
        400,
        "invalid_request",
        False,
    ),
    (
        {"json": {"url": "http://127.0.0.1/x.jpg"}, "query_string": {"preprocessing": "x"}},
        400,
        "invalid_request",
        False,
    ),
    ({"data": {"nourl": "x"}}, 400, "invalid_request", False),
    (
        {"data": {"nourl": "x"}, "content_type": "multipart/form-data"},
        400,
        "invalid_request",
        False,
    ),
    ({"data": b"", "content_type": "image/png"}, 400, "invalid_request", None),
    ({"data": b"x"}, 400, "invalid_request", None),  # no Content-Type at all
    ({"json": {"url": "ftp://example.org/x.jpg"}}, 422, "source_not_allowed", True),
    ({"data": {"url": "http://user:pw@127.0.0.1/x.jpg"}}, 422, "source_not_allowed", True),
]


@pytest.mark.parametrize(("kwargs", "status", "code", "valid"), MISTAKES)
def test_caller_mistakes(
    openapi: OpenAPI,
    client: FlaskClient,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    valid: bool | None,
) -> None:
    response = call(openapi, client, status=status, valid_request=valid, **kwargs)
    assert error_code(response) == code
    assert response.headers["X-Request-Id"]


def test_image_host_failures_are_retryable(
    openapi: OpenAPI, client: FlaskClient, image_host: ImageHost
) -> None:
    missing = image_host.url("/contract/missing.jpg")
    gone = call(openapi, client, status=422, json={"url": missing})
    assert error_code(gone) == "source_not_found" and "Retry-After" not in gone.headers
    as_text = call(openapi, client, status=422, data={"url": missing})
    assert as_text.mimetype == "text/plain" and error_code(as_text) == "source_not_found"
    secret = image_host.file("/contract/secret.jpg", b"no", status=403, content_type="text/plain")
    forbidden = call(openapi, client, status=422, json={"url": secret})
    assert error_code(forbidden) == "source_forbidden"

    failing = image_host.file("/contract/failing.jpg", b"oops", "text/plain", status=500)
    failed = call(openapi, client, status=502, json={"url": failing})
    assert error_code(failed) == "source_unavailable" and failed.headers["Retry-After"] == "5"
    failed_text = call(openapi, client, status=502, data={"url": failing})
    assert failed_text.mimetype == "text/plain" and error_code(failed_text) == "source_unavailable"

    busy = image_host.file(
        "/contract/busy.jpg",
        b"busy",
        status=503,
        content_type="text/plain",
        headers={"Retry-After": "7"},
    )
    overloaded = call(openapi, client, status=503, json={"url": busy})
    assert error_code(overloaded) == "source_unavailable"
    assert overloaded.headers["Retry-After"] == "7"

    loop = image_host.redirect("/contract/loop.jpg", "/contract/loop.jpg")
    redirects = call(openapi, client, status=422, data={"url": loop})
    assert error_code(redirects) == "too_many_redirects"

    text = image_host.file("/contract/page.html", b"<html></html>", content_type="text/html")
    not_image = call(openapi, client, status=415, data={"url": text})
    assert error_code(not_image) == "unsupported_media_type"

    slow = image_host.hang("/contract/hang.jpg", 3)
    timeout = call(openapi, client, status=504, json={"url": slow})
    assert error_code(timeout) == "source_timeout" and timeout.headers["Retry-After"]


@pytest.fixture(scope="module")
def tight_app() -> Iterator[Flask]:
    """Small caps and one request in flight."""
    app = start_app(
        make_app(
            NSFWOID_MAX_BODY_BYTES="100000",
            NSFWOID_MAX_FETCH_BYTES="1000",
            NSFWOID_MAX_PIXELS="10000",
            NSFWOID_MAX_IN_FLIGHT="1",
        )
    )
    yield app
    app.extensions["nsfwoid"].stop()


def test_caps_and_admission(openapi: OpenAPI, tight_app: Flask, image_host: ImageHost) -> None:
    client = tight_app.test_client()
    too_big = call(
        openapi,
        client,
        status=413,
        data=b"\xff" * 100_001,
        content_type="image/jpeg",
    )
    assert error_code(too_big) == "payload_too_large"
    pixels = call(openapi, client, status=422, data=photo_jpeg("coffee"), content_type="image/jpeg")
    assert error_code(pixels) == "image_too_large"
    big = image_host.file("/contract/big.jpg", photo_jpeg("coffee"))
    fetched = call(openapi, client, status=422, json={"url": big})
    assert error_code(fetched) == "source_too_large"

    # One request in flight (a fetch that hangs) and the next one is refused at once.
    hang = image_host.hang("/contract/admission.jpg", 3)
    hits = image_host.hits_for("/contract/admission.jpg")
    first = threading.Thread(target=lambda: tight_app.test_client().post("/", json={"url": hang}))
    first.start()
    try:
        deadline = time.monotonic() + 5
        while image_host.hits_for("/contract/admission.jpg") == hits:
            assert time.monotonic() < deadline, "the first request never reached the host"
            time.sleep(0.01)
        refused = call(openapi, client, status=503, data=tiny_png(), content_type="image/png")
        assert error_code(refused) == "overloaded" and refused.headers["Retry-After"] == "1"
    finally:
        first.join(timeout=10)


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_request_deadline(openapi: OpenAPI, image_host: ImageHost) -> None:
    """The image arrives in about 1.5 s, the request deadline is 0.5 s: decoding never starts."""
    app = start_app(make_app(NSFWOID_REQUEST_DEADLINE="0.5"))
    try:
        body = tiny_png()
        drip = image_host.drip("/contract/drip.png", body, chunk=len(body) // 6 + 1, interval=0.25)
        requests: list[dict[str, Any]] = [{"data": {"url": drip}}, {"json": {"url": drip}}]
        for kwargs in requests:
            late = call(openapi, app.test_client(), status=504, **kwargs)
            assert error_code(late) == "deadline_exceeded" and late.headers["Retry-After"] == "1"
    finally:
        app.extensions["nsfwoid"].stop()


def test_not_ready(openapi: OpenAPI, tmp_path: Path) -> None:
    """A model that fails to load: liveness stays up, readiness and scoring say 503."""
    app = make_app(NSFWOID_MODEL_DIR=str(tmp_path))
    service = app.extensions["nsfwoid"]
    service.start(wait=True)
    try:
        assert service.load_error
        client = app.test_client()
        call(openapi, client, "GET", "/healthz", status=200)
        unready = call(openapi, client, "GET", "/readyz", status=503)
        assert unready.get_json()["reason"] == "model failed to load"
        refused = call(
            openapi, client, status=503, data=photo_jpeg("coffee"), content_type="image/jpeg"
        )
        assert error_code(refused) == "not_ready" and refused.headers["Retry-After"] == "1"
    finally:
        service.stop()


# --- operations ------------------------------------------------------------------------


def test_operations_endpoints(openapi: OpenAPI, client: FlaskClient) -> None:
    call(openapi, client, "GET", "/", status=200)
    assert call(openapi, client, "GET", "/healthz", status=200).get_json() == {"status": "ok"}
    assert call(openapi, client, "GET", "/readyz", status=200).get_json()["status"] == "ready"
    metrics = call(openapi, client, "GET", "/metrics", status=200)
    assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    openmetrics = call(
        openapi,
        client,
        "GET",
        "/metrics",
        status=200,
        headers={"Accept": "application/openmetrics-text"},
    )
    assert openmetrics.get_data(as_text=True).endswith("# EOF\n")
    call(openapi, client, "GET", "/openapi.json", status=200)
    call(openapi, client, "GET", "/openapi.yaml", status=200)
    missing = call(openapi, client, "GET", "/nope", status=404)
    assert error_code(missing) == "not_found"
    for method in ("PUT", "PATCH", "DELETE"):
        refused = call(openapi, client, method, "/", status=405)
        assert refused.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    call(openapi, client, "OPTIONS", "/", status=204)


# --- KServe ----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_kserve_exchanges(openapi: OpenAPI, client: FlaskClient) -> None:
    for path in (
        "/v1/models",
        "/v1/models/nsfwoid",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/nsfwoid",
        "/v2/models/nsfwoid/ready",
    ):
        call(openapi, client, "GET", path, status=200)
    # openapi-core judges a bare ``?spec`` an empty value, allowed only by the deprecated
    # ``allowEmptyValue``: the request is not judged, the answer is.
    spec = call(openapi, client, "GET", "/?spec", status=200, valid_request=None)
    assert spec.get_json() == SPEC
    image = _b64(photo_jpeg("astronaut"))
    predicted = call(
        openapi,
        client,
        path="/v1/models/nsfwoid:predict?preprocessing=reference",
        status=200,
        json={"instances": [{"image": {"b64": image}}, {"b64": _b64(tiny_png())}]},
    )
    assert len(predicted.get_json()["predictions"]) == 2
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [image]}
    call(openapi, client, path="/v2/models/nsfwoid/infer", status=200, json={"inputs": [tensor]})
    bad = {"instances": [{"b64": _b64(b"hello, not an image")}]}
    call(openapi, client, path="/v1/models/nsfwoid:predict", status=400, json=bad)
    missing = {"inputs": [{**tensor, "data": ["not base64!"]}]}
    call(
        openapi,
        client,
        path="/v2/models/nsfwoid/infer",
        status=400,
        valid_request=False,
        json=missing,
    )
    for method, path in (("GET", "/v1/models/other"), ("POST", "/v2/models/other/infer")):
        call(openapi, client, method, path, status=404, valid_request=False, json={"inputs": []})


def test_kserve_examples_are_answered_as_documented(openapi: OpenAPI, client: FlaskClient) -> None:
    """The document's example requests, sent as they are, get its example answers' shape."""
    examples = SPEC["components"]["examples"]
    for path, name in (
        ("/v1/models/nsfwoid:predict", "KServeV1"),
        ("/v2/models/nsfwoid/infer", "KServeV2"),
    ):
        reply = call(
            openapi, client, path=path, status=200, json=examples[f"{name}Request"]["value"]
        )
        expected = examples[f"{name}Response"]["value"]
        body = reply.get_json()
        assert set(body) == set(expected)
        if name == "KServeV2":
            assert body["outputs"][0]["shape"] == expected["outputs"][0]["shape"]
            assert body["id"] == expected["id"]


# --- generated requests ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_app() -> Iterator[Flask]:
    """A fresh app with production network defaults, confined to loopback.

    Generated URLs may name any host: the allowlist names only 127.0.0.1, and private
    addresses are refused at connect time, so every generated URL is a 422 before any
    connection is made.
    """
    app = start_app(
        make_app(
            NSFWOID_ALLOW_PRIVATE_NETWORKS="false",
            NSFWOID_ALLOWED_HOSTS="127.0.0.1",
            NSFWOID_FETCH_DEADLINE="2",
        )
    )
    yield app
    app.extensions["nsfwoid"].stop()


# Loaded from the file, not from the app: schemathesis' fixture-based loader does not work
# with pytest 9 (it writes ``node._nodeid``), and the served copy is proven equal above.
def _generated(mode: str) -> Any:
    config = schemathesis.Config.from_dict({"generation": {"mode": mode}})
    return schemathesis.openapi.from_dict(copy.deepcopy(SPEC), config=config)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=200,
    deadline=None,
    database=None,  # nothing written into the shared checkout
    suppress_health_check=list(hypothesis.HealthCheck),
)


def _image_samples() -> list[bytes]:
    frames = [Image.new("RGB", (24, 16), (40 * i, 120, 200 - 40 * i)) for i in range(4)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=40)
    png = io.BytesIO()
    Image.new("RGBA", (20, 30), (250, 200, 180, 128)).save(png, format="PNG")
    jpeg = photo_jpeg("astronaut", size=(48, 48))
    return [jpeg, jpeg[: len(jpeg) // 2], png.getvalue(), gif.getvalue()]


# Raw bodies: real (small) images, cut-off ones and arbitrary bytes, so generated requests
# reach the 200 and 422 answers too, not only the 415 of random bytes.
IMAGE_BODIES = st.one_of(
    st.sampled_from(_image_samples()),
    st.tuples(st.sampled_from(_image_samples()), st.integers(1, 400)).map(
        lambda pair: pair[0][: pair[1]]
    ),
    st.binary(max_size=256),
)
for _media_type in ("image/jpeg", "image/png", "image/gif"):
    schemathesis.openapi.media_type(_media_type, IMAGE_BODIES)
schemathesis.openapi.media_type("application/octet-stream", IMAGE_BODIES)

positive = _generated("positive")
# Requests that break the document: only the scoring operation must answer them with a
# documented 4xx. Elsewhere a value off the document is simply another endpoint (a
# generated "/healthz" for "/{path}" is a 200, rightly) or is ignored (query, headers).
negative = _generated("negative").include(method="POST")


@positive.parametrize()
@FUZZ_SETTINGS
def test_generated_requests_conform(fuzz_app: Flask, case: schemathesis.Case) -> None:
    case.call_and_validate(app=fuzz_app, checks=CHECKS)


@negative.parametrize()
@FUZZ_SETTINGS
def test_generated_bad_requests_are_documented_4xx(
    fuzz_app: Flask, case: schemathesis.Case
) -> None:
    case.call_and_validate(app=fuzz_app, checks=CHECKS)
