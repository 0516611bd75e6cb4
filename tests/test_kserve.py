"""The KServe door on the real function: the same scores as ``POST /``, KServe's shapes and
errors, and v2 bodies that KServe's own Open Inference Protocol document accepts."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from tests.conftest import ROOT, make_app, start_app
from tests.photos import PHOTOS, photo_bytes, photo_jpeg

V2_DOC = ROOT.parent / "shared" / "wikimedia" / "kserve" / "rest_predict_v2.yaml"
PREDICT = "/v1/models/nsfwoid:predict"
INFER = "/v2/models/nsfwoid/infer"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1_body(images: list[bytes]) -> dict[str, Any]:
    return {"instances": [{"image": {"b64": b64(data)}} for data in images]}


def v2_body(images: list[bytes], **extra: Any) -> dict[str, Any]:
    tensor = {"name": "image", "shape": [len(images)], "datatype": "BYTES"}
    return {"inputs": [{**tensor, "data": [b64(data) for data in images]}], **extra}


def generated(index: int) -> bytes:
    """A small synthetic picture (gradient and a block), different for each index."""
    image = Image.linear_gradient("L").resize((96 + 8 * index, 64)).convert("RGB")
    image.paste((40 * index % 256, 180, 90), (10, 10, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if index % 2 else "JPEG")
    return buffer.getvalue()


def parity_set() -> list[bytes]:
    """The project's real photos (tests/photos.py), topped up to 20 with generated ones."""
    images = [photo_bytes(name) for name in PHOTOS]
    images += [generated(index) for index in range(max(0, 20 - len(images)))]
    assert len(images) == 20
    return images


def kserve_error(response: Any, status: int) -> str:
    """KServe's error shape, exactly: ``{"error": "<message>"}``."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


@pytest.fixture(scope="module")
def v2_schemas() -> dict[str, Any]:
    if not V2_DOC.is_file():
        pytest.skip(f"KServe's v2 REST document not found at {V2_DOC} (shared/wikimedia/kserve)")
    return yaml.safe_load(V2_DOC.read_text())


def v2_valid(doc: dict[str, Any], name: str, value: Any) -> None:
    """``value`` against ``components.schemas[name]`` of KServe's document (OpenAPI 3.0)."""
    schema = {**doc, **doc["components"]["schemas"][name]}
    errors = [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(value)]
    assert not errors, f"{name}: {errors}"


@pytest.mark.parametrize("mode", ["standard", "reference"])
def test_v1_and_v2_score_the_parity_set_as_post_does(client: FlaskClient, mode: str) -> None:
    images = parity_set()
    expected = []
    for data in images:
        reply = client.post(f"/?preprocessing={mode}", data=data, content_type="image/jpeg")
        assert reply.status_code == 200, reply.get_data(as_text=True)
        expected.append(reply.get_json()["score"])
    v1: list[float] = []
    v2: list[float] = []
    for start in (0, 16):  # the default cap is 16 images per request
        chunk = images[start : start + 16]
        predicted = client.post(f"{PREDICT}?preprocessing={mode}", json=v1_body(chunk))
        assert predicted.status_code == 200, predicted.get_data(as_text=True)
        v1 += [p["prob_nsfw"] for p in predicted.get_json()["predictions"]]
        inferred = client.post(f"{INFER}?preprocessing={mode}", json=v2_body(chunk))
        assert inferred.status_code == 200, inferred.get_data(as_text=True)
        output = inferred.get_json()["outputs"][0]
        assert output["shape"] == [len(chunk), 2]
        v2 += output["data"][1::2]
    assert v1 == expected  # bit for bit: == on floats that went through JSON both ways
    assert v2 == expected
    assert len(set(expected)) > 15  # real, different scores, not one constant


def test_v1_shapes(client: FlaskClient) -> None:
    assert client.get("/v1/models").get_json() == {"models": ["nsfwoid"]}
    assert client.get("/v1/models/nsfwoid").get_json() == {"name": "nsfwoid", "ready": True}
    reply = client.post(PREDICT, json={"instances": [{"b64": b64(photo_jpeg("coffee"))}]})
    assert reply.status_code == 200 and reply.headers["X-Request-Id"]
    [prediction] = reply.get_json()["predictions"]
    assert set(prediction) == {"prob_nsfw", "prob_sfw"}
    assert abs(prediction["prob_nsfw"] + prediction["prob_sfw"] - 1) < 1e-6
    # Counted under its own input kind, as every door's requests are.
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'nsfwoid_requests_total{input="kserve_v1",outcome="ok"}' in metrics


def test_v2_shapes_follow_kserves_document(client: FlaskClient, v2_schemas: dict) -> None:
    live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")
    assert (live.get_json(), ready.get_json()) == ({"live": True}, {"ready": True})
    server = client.get("/v2").get_json()
    v2_valid(v2_schemas, "metadata_server_response", server)
    model = client.get("/v2/models/nsfwoid").get_json()
    v2_valid(v2_schemas, "metadata_model_response", model)
    assert model["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert model["outputs"][0]["name"] == "probabilities"
    assert client.get("/v2/models/nsfwoid/ready").get_json() == {"name": "nsfwoid", "ready": True}

    request = v2_body(
        [photo_jpeg("coffee"), photo_jpeg("rocket")],
        id="caller-7",
        outputs=[{"name": "probabilities"}],
    )
    request["inputs"][0]["parameters"] = {"content_type": "base64"}
    v2_valid(v2_schemas, "inference_request", request)
    reply = client.post(INFER, json=request)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    body = reply.get_json()
    v2_valid(v2_schemas, "inference_response", body)
    assert body["id"] == "caller-7" and body["model_name"] == "nsfwoid"
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (
        "probabilities",
        "FP32",
        [2, 2],
    )
    # Without an id, the request id is the answer's id.
    anonymous = client.post(INFER, json=v2_body([photo_jpeg("coffee")]))
    assert anonymous.get_json()["id"] == anonymous.headers["X-Request-Id"]
    for failed in (client.post(INFER, json={"inputs": []}), client.get("/v2/models/other")):
        v2_valid(v2_schemas, "inference_error_response", failed.get_json())


CORRUPT_JPEG = b"\xff\xd8\xff\xe0" + b"garbage" * 10


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [{"image": {"b64": "not base64!"}}]}, "not valid base64"),
        ({"instances": [{"image": {"b64": b64(b"x")[:-1]}}]}, "incorrectly padded"),
        (v1_body([photo_jpeg("coffee"), b"hello, not an image"]), "instances[1]: not an image"),
        (v1_body([CORRUPT_JPEG]), "instances[0]:"),
        ({"image": {"b64": "AAAA"}}, "Input data should have the following format"),
        ({"instances": []}, "Input data should have the following format"),
        (v1_body([photo_jpeg("coffee")] * 17), "at most 16 instances"),
        ({"instances": [{"b64": "AAAA"}]}, "instances[0]: "),
    ],
)
def test_v1_caller_mistakes_are_400(client: FlaskClient, body: Any, message: str) -> None:
    assert message in kserve_error(client.post(PREDICT, json=body), 400)


def test_v1_bad_requests_beyond_the_body(client: FlaskClient) -> None:
    malformed = client.post(PREDICT, data=b"{not json", content_type="application/json")
    assert kserve_error(malformed, 400).startswith("Unrecognized request format")
    bad_mode = client.post(PREDICT + "?preprocessing=fancy", json=v1_body([b"x"]))
    assert "preprocessing must be one of" in kserve_error(bad_mode, 400)
    unknown = client.post("/v1/models/nsfw-model:predict", json=v1_body([b"x"]))
    assert kserve_error(unknown, 404) == "Model with name nsfw-model does not exist."
    assert "does not exist" in kserve_error(client.get("/v1/models/nsfw-model"), 404)
    assert "does not exist" in kserve_error(client.post("/v2/models/x/infer", json={}), 404)
    assert "does not exist" in kserve_error(client.get("/v2/models/x/ready"), 404)
    assert "no such endpoint" in kserve_error(client.post("/v1/models/nsfwoid:explain"), 404)
    assert "no such endpoint" in kserve_error(client.get("/v2/repository/index"), 404)
    refused = client.delete("/v2/models/nsfwoid")
    assert "DELETE is not supported" in kserve_error(refused, 405)
    assert refused.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
    assert client.options("/v2/models/nsfwoid/infer").status_code == 204


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%"]}]},
            "base64",
        ),
        (v2_body([b"hello, not an image"]), "inputs[0].data[0]: not an image"),
        (v2_body([photo_jpeg("coffee")] * 17), "at most 16 images"),
        ({"instances": []}, "inference request"),
    ],
)
def test_v2_caller_mistakes_are_400(client: FlaskClient, body: Any, message: str) -> None:
    assert message in kserve_error(client.post(INFER, json=body), 400)


@pytest.fixture(scope="module")
def tight_app() -> Iterator[Flask]:
    """Images of at most 100 kB (so base64 of at most 133,334 characters)."""
    app = start_app(make_app(NSFWOID_MAX_BODY_BYTES="100000"))
    yield app
    app.extensions["nsfwoid"].stop()


def test_oversized_instances_and_bodies(tight_app: Flask) -> None:
    client = tight_app.test_client()
    cap = 133_334
    over = "A" * (cap + 4)  # valid base64, one quantum past the cap: refused by length
    refused = client.post(PREDICT, json={"instances": [{"b64": over}]})
    assert "larger than 100000 bytes" in kserve_error(refused, 400)
    infer = client.post(
        INFER,
        json={"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [over]}]},
    )
    assert "larger than 100000 bytes" in kserve_error(infer, 400)
    # The whole body is capped at the base64 of one full image plus 64 KiB of JSON.
    body = json.dumps({"instances": [{"b64": "A" * 100_000}] * 3})
    too_big = client.post(PREDICT, data=body, content_type="application/json")
    assert "larger than" in kserve_error(too_big, 413)
    # An image within the cap is scored.
    fits = client.post(PREDICT, json=v1_body([photo_jpeg("coffee", quality=50)]))
    assert fits.status_code == 200, fits.get_data(as_text=True)


def test_not_ready(tmp_path: Path) -> None:
    """A model that fails to load: KServe's readiness endpoints and predict say 503."""
    app = make_app(NSFWOID_MODEL_DIR=str(tmp_path))
    service = app.extensions["nsfwoid"]
    service.start(wait=True)
    try:
        assert service.load_error
        client = app.test_client()
        assert client.get("/v2/health/live").status_code == 200
        assert "is not ready" in kserve_error(client.get("/v1/models/nsfwoid"), 503)
        assert "not ready" in kserve_error(client.get("/v2/health/ready"), 503)
        assert "is not ready" in kserve_error(client.get("/v2/models/nsfwoid/ready"), 503)
        refused = client.post(PREDICT, json=v1_body([b"x"]))
        kserve_error(refused, 503)
        assert refused.headers["Retry-After"] == "1"
        metadata = client.get("/v2/models/nsfwoid").get_json()
        assert "versions" not in metadata and metadata["name"] == "nsfwoid"
    finally:
        service.stop()
