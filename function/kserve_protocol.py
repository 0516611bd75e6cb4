"""KServe's two REST protocols, as pure functions: request bodies in, image bytes out; scores
in, response bodies out. No HTTP and no model here (``function/doors/kserve.py`` does that).

* v1 (TensorFlow Serving's REST shape): ``{"instances": [{"image": {"b64": ...}}, ...]}`` →
  ``{"predictions": [{"prob_nsfw", "prob_sfw"}, ...]}``. The instance shape is the one
  Wikimedia's Lift Wing NSFW model took, so its callers keep working; unlike it, every
  instance is scored, not only the first.
* v2 (the Open Inference Protocol): one ``BYTES`` input whose elements are base64 strings
  (the JSON binding has no raw bytes) → one ``FP32`` output of shape ``[n, 2]`` holding
  (sfw, nsfw) per image, the order of open_nsfw's own softmax.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from function.errors import InvalidRequest, NotFound

MODEL_NAME = "nsfwoid"
V2_INPUT = "image"
V2_OUTPUT = "probabilities"
# KServe's wording, so that a caller's error handling written against KServe matches ours.
V1_FORMAT = (
    'Input data should have the following format: {"instances": [{"image": {"b64": '
    '"<base64 encoded string>"}}]}'
)
# Platform names as the Open Inference Protocol's model metadata spells them.
PLATFORMS = {
    "onnxruntime": "onnxruntime_onnx",
    "litert": "tensorflow_lite",
    "tensorflow": "tensorflow_savedmodel",
}
_BASE64 = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")


def b64_cap(max_image_bytes: int) -> int:
    """The longest base64 text that can decode to ``max_image_bytes`` (checked before decoding)."""
    return math.ceil(max_image_bytes * 4 / 3)


def body_cap(max_image_bytes: int) -> int:
    """A KServe body carries base64, a third larger than the bytes: room for one image at the
    byte cap plus the JSON around it. Several images share that room."""
    return b64_cap(max_image_bytes) + 64 * 1024


def check_model(name: str) -> None:
    if name != MODEL_NAME:
        raise NotFound(f"Model with name {name} does not exist.")


def probabilities(nsfw: float) -> tuple[float, float]:
    """(sfw, nsfw) as FP32 values: open_nsfw's softmax has two outputs that sum to one."""
    score = np.float32(nsfw)
    return float(np.float32(1.0) - score), float(score)


def decode_b64(text: Any, where: str, max_image_bytes: int) -> bytes:
    """One base64 image (standard or URL-safe alphabet), its length capped before decoding."""
    if not isinstance(text, str) or not text:
        raise InvalidRequest(f"{where} must be a non-empty base64 string")
    if len(text) > b64_cap(max_image_bytes):
        raise InvalidRequest(f"{where}: the image is larger than {max_image_bytes} bytes")
    if not _BASE64.fullmatch(text):
        raise InvalidRequest(f"{where} is not valid base64")
    try:
        data = base64.b64decode(text.translate(_URLSAFE), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"{where}: Base64 encoded string is incorrectly padded.") from exc
    return data


_URLSAFE = str.maketrans("-_", "+/")


def load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Unrecognized request format: {exc}") from exc


# --- v1 -------------------------------------------------------------------------------------


def parse_v1(body: bytes, *, max_instances: int, max_image_bytes: int) -> list[bytes]:
    """``{"instances": [...]}`` (or ``"inputs"``, which KServe's v1 docs allow too) → images.

    An instance is ``{"image": {"b64": ...}}``, or ``{"b64": ...}`` (TensorFlow Serving's
    form for a model with one input).
    """
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise InvalidRequest(V1_FORMAT)
    instances = payload.get("instances", payload.get("inputs"))
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest(V1_FORMAT)
    if len(instances) > max_instances:
        raise InvalidRequest(f"at most {max_instances} instances per request")
    images = []
    for index, instance in enumerate(instances):
        where = f"instances[{index}]"
        if isinstance(instance, dict) and isinstance(instance.get("image"), dict):
            instance, where = instance["image"], where + ".image"
        if not isinstance(instance, dict) or "b64" not in instance:
            raise InvalidRequest(f"{where}: {V1_FORMAT}")
        images.append(decode_b64(instance["b64"], where + ".b64", max_image_bytes))
    return images


def render_v1(scores: list[float]) -> dict[str, Any]:
    predictions = []
    for score in scores:
        sfw, nsfw = probabilities(score)
        predictions.append({"prob_nsfw": nsfw, "prob_sfw": sfw})
    return {"predictions": predictions}


# --- v2 -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InferRequest:
    images: list[bytes]
    id: str | None


def _flatten(data: Any) -> list[Any]:
    """Row-major flattening: the JSON binding allows nested lists as well as flat ones."""
    if not isinstance(data, list):
        return [data]
    return [leaf for item in data for leaf in _flatten(item)]


def parse_v2(body: bytes, *, max_instances: int, max_image_bytes: int) -> InferRequest:
    payload = load_json(body)
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InvalidRequest('the body must be an inference request: {"inputs": [...]}')
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("id must be a string")
    inputs = payload["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InvalidRequest(f'expected exactly one input, "{V2_INPUT}"')
    tensor = inputs[0]
    if tensor.get("name") != V2_INPUT:
        raise InvalidRequest(f'unknown input {tensor.get("name")!r}: the input is "{V2_INPUT}"')
    if tensor.get("datatype") != "BYTES":
        raise InvalidRequest(f'input "{V2_INPUT}" must have datatype BYTES (encoded images)')
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be an object")
    content_type = parameters.get("content_type", "base64")
    if content_type not in ("base64", "bytes"):
        raise InvalidRequest(
            f'content_type {content_type!r} is not accepted: image bytes travel as "base64"'
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InvalidRequest("shape must be a non-empty list of non-negative integers")
    data = _flatten(tensor.get("data"))
    if math.prod(shape) != len(data):
        raise InvalidRequest(f"shape {shape} does not match the {len(data)} data elements")
    if not data:
        raise InvalidRequest(f'input "{V2_INPUT}" holds no images')
    if len(data) > max_instances:
        raise InvalidRequest(f"at most {max_instances} images per request")
    for output in payload.get("outputs") or []:
        if not isinstance(output, dict) or output.get("name") != V2_OUTPUT:
            raise InvalidRequest(f'unknown output requested: the output is "{V2_OUTPUT}"')
    images = [
        decode_b64(text, f"inputs[0].data[{index}]", max_image_bytes)
        for index, text in enumerate(data)
    ]
    return InferRequest(images, request_id)


def render_v2(scores: list[float], *, request_id: str, model_version: str | None) -> dict[str, Any]:
    data: list[float] = []
    for score in scores:
        data.extend(probabilities(score))
    response: dict[str, Any] = {"model_name": MODEL_NAME, "id": request_id}
    if model_version:
        response["model_version"] = model_version
    response["outputs"] = [
        {"name": V2_OUTPUT, "shape": [len(scores), 2], "datatype": "FP32", "data": data}
    ]
    return response


def model_metadata(*, version: str | None, runtime: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": MODEL_NAME}
    if version:
        metadata["versions"] = [version]
    metadata["platform"] = PLATFORMS.get(runtime, runtime)
    metadata["inputs"] = [{"name": V2_INPUT, "datatype": "BYTES", "shape": [-1]}]
    metadata["outputs"] = [{"name": V2_OUTPUT, "datatype": "FP32", "shape": [-1, 2]}]
    return metadata


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": MODEL_NAME, "version": version, "extensions": []}
