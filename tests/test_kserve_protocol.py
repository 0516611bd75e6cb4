"""KServe's v1 and v2 request parsing and response rendering, as pure functions (no server)."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from function import kserve_protocol as protocol
from function.errors import InvalidRequest, NotFound

IMAGE = b"GIF89a\x01\x00\x01\x00not really an image, bytes are all the parser sees"
B64 = base64.b64encode(IMAGE).decode()
LIMITS = {"max_instances": 4, "max_image_bytes": 1000}


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def v1(payload: Any, **limits: int) -> list[bytes]:
    return protocol.parse_v1(body(payload), **{**LIMITS, **limits})


def v2_input(data: Any, **overrides: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data, **overrides}
        ]
    }


def v2(payload: Any, **limits: int) -> protocol.InferRequest:
    return protocol.parse_v2(body(payload), **{**LIMITS, **limits})


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidRequest) as caught:
        call(*args, **kwargs)
    assert caught.value.status == 400
    return caught.value.message


# --- v1 -------------------------------------------------------------------------------------


def test_v1_instances_in_both_shapes_and_order() -> None:
    other = base64.urlsafe_b64encode(b"\xfb\xff" + IMAGE).decode()  # URL-safe alphabet too
    images = v1({"instances": [{"image": {"b64": B64}}, {"b64": other}]})
    assert images == [IMAGE, b"\xfb\xff" + IMAGE]
    assert v1({"inputs": [{"image": {"b64": B64}}]}) == [IMAGE]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"instances": []},
        {"instances": {"image": {"b64": B64}}},
        [{"image": {"b64": B64}}],
        {"instances": [{"image": B64}]},
        {"instances": [{"picture": {"b64": B64}}]},
        {"instances": [B64]},
    ],
)
def test_v1_wrong_shape_says_the_expected_format(payload: Any) -> None:
    assert protocol.V1_FORMAT in refused(v1, payload)


def test_v1_refusals_name_the_instance() -> None:
    ok = {"image": {"b64": B64}}
    assert refused(v1, {"instances": [ok] * 5}) == "at most 4 instances per request"
    padding = refused(v1, {"instances": [ok, {"image": {"b64": B64[:-1]}}]})
    assert padding.startswith("instances[1].image.b64: Base64 encoded string is incorrectly")
    assert "not valid base64" in refused(v1, {"instances": [{"b64": "abc$"}]})
    assert "non-empty" in refused(v1, {"instances": [{"b64": ""}]})
    assert "non-empty" in refused(v1, {"instances": [{"b64": 12}]})
    assert "incorrectly padded" in refused(v1, {"instances": [{"b64": "=="}]})
    assert refused(protocol.parse_v1, b"{not json", **LIMITS).startswith(
        "Unrecognized request format"
    )


def test_v1_base64_length_is_capped_before_decoding() -> None:
    cap = protocol.b64_cap(1000)
    assert cap == 1334  # ceil(1000 * 4 / 3)
    exact = base64.b64encode(b"x" * 1000).decode()  # 1336 characters with padding
    assert len(exact) > cap
    assert "larger than 1000 bytes" in refused(v1, {"instances": [{"b64": exact}]})
    fits = base64.b64encode(b"x" * 999).decode()
    assert len(fits) == 1332 and v1({"instances": [{"b64": fits}]}) == [b"x" * 999]
    # Past the cap is refused by length alone: the text is never decoded.
    huge = "A" * (cap + 1)
    assert "larger than" in refused(v1, {"instances": [{"b64": huge}]})


def test_v1_render_sums_to_one_in_float32() -> None:
    rendered = protocol.render_v1([0.25, 3e-05, 1.0])
    assert [p["prob_nsfw"] for p in rendered["predictions"]] == [0.25, float(np.float32(3e-05)), 1]
    for prediction in rendered["predictions"]:
        total = np.float32(prediction["prob_sfw"]) + np.float32(prediction["prob_nsfw"])
        assert abs(float(total) - 1) <= 1e-7
        assert np.float32(prediction["prob_sfw"]) == prediction["prob_sfw"]  # an FP32 value


# --- v2 -------------------------------------------------------------------------------------


def test_v2_bytes_input_flat_or_nested() -> None:
    parsed = v2({"id": "r-1", **v2_input([B64, B64])})
    assert parsed.images == [IMAGE, IMAGE] and parsed.id == "r-1"
    nested = v2_input([[B64], [B64]], shape=[2, 1], parameters={"content_type": "base64"})
    assert v2({**nested, "outputs": [{"name": "probabilities"}]}).images == [IMAGE, IMAGE]
    assert v2(v2_input([B64])).id is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": {}}, "inference request"),
        ({"inputs": []}, "exactly one input"),
        ({**v2_input([B64]), "id": 7}, "id must be a string"),
        (v2_input([B64], name="input-0"), "unknown input"),
        (v2_input([B64], datatype="UINT8"), "datatype BYTES"),
        (v2_input([B64], parameters={"content_type": "str"}), "content_type 'str'"),
        (v2_input([B64], parameters=[]), "parameters must be an object"),
        (v2_input([B64], shape=[2]), "does not match"),
        (v2_input([B64], shape="1"), "shape must be"),
        (v2_input([B64], shape=[True]), "shape must be"),
        (v2_input([], shape=[0]), "holds no images"),
        (v2_input([B64] * 5), "at most 4 images"),
        ({**v2_input([B64]), "outputs": [{"name": "scores"}]}, "unknown output"),
        (v2_input(["%%%"]), "inputs[0].data[0] is not valid base64"),
        (v2_input([B64, 3]), "inputs[0].data[1] must be a non-empty base64 string"),
    ],
)
def test_v2_refusals(payload: Any, message: str) -> None:
    assert message in refused(v2, payload)


def test_v2_render_is_fp32_sfw_nsfw_rows() -> None:
    rendered = protocol.render_v2([0.25, 0.5], request_id="r-2", model_version="1.0.0")
    assert rendered == {
        "model_name": "nsfwoid",
        "id": "r-2",
        "model_version": "1.0.0",
        "outputs": [
            {
                "name": "probabilities",
                "shape": [2, 2],
                "datatype": "FP32",
                "data": [0.75, 0.25, 0.5, 0.5],
            }
        ],
    }
    assert "model_version" not in protocol.render_v2([0.1], request_id="x", model_version=None)


def test_metadata_and_model_names() -> None:
    meta = protocol.model_metadata(version="1.0.0", runtime="litert")
    assert meta["platform"] == "tensorflow_lite" and meta["versions"] == ["1.0.0"]
    assert meta["inputs"][0] == {"name": "image", "datatype": "BYTES", "shape": [-1]}
    assert meta["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
    assert "versions" not in protocol.model_metadata(version=None, runtime="onnxruntime")
    protocol.check_model("nsfwoid")
    with pytest.raises(NotFound, match="Model with name nsfw-model does not exist."):
        protocol.check_model("nsfw-model")
