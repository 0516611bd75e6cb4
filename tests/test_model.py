"""The model stage on its own: runtimes behind one interface, whatever the batching."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from function.model import Model, ModelLoadError
from function.preprocess import reference_tensor
from tests.conftest import MODEL_DIR
from tests.photos import photo_bytes


@pytest.mark.model
@pytest.mark.parametrize("runtime", ["onnxruntime", "litert"])
@pytest.mark.parametrize("spin", [True, False])
def test_a_score_does_not_depend_on_its_batch(runtime: str, spin: bool) -> None:
    """A request scored alone, or batched with others under load, gets the same score.

    With spinning on, onnxruntime serves a lone request and a busy server's batches from two
    differently tuned sessions; a request must not be able to tell which one it got."""
    model = Model(MODEL_DIR, runtime, threads=2, spin=spin)
    model.load()
    model.warm_up()
    names = ("astronaut", "retina", "coffee", "motorcycle_left", "chelsea")
    tensors = np.stack([reference_tensor(photo_bytes(name)) for name in names])
    batched = model.predict(tensors)
    singles = np.concatenate([model.predict(tensor[None]) for tensor in tensors])
    alone = np.concatenate([model.predict(tensor[None], alone=True) for tensor in tensors])
    assert batched.shape == singles.shape == alone.shape == (len(names),)
    assert float(np.abs(batched - alone).max()) <= 1e-6
    assert float(np.abs(singles - alone).max()) <= 1e-6
    assert len({round(float(score), 3) for score in alone}) > 1  # real, differing scores


@pytest.mark.model
def test_litert_without_its_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default install leaves LiteRT out; choosing it there names the lock to install."""
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import now fails, as uninstalled
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(ModelLoadError, match="requirements-litert.lock"):
        Model(MODEL_DIR, "litert").load()


@pytest.mark.model
@pytest.mark.parametrize("runtime", ["onnxruntime", "litert"])
def test_an_artefact_that_is_not_the_built_one_is_refused(tmp_path: Path, runtime: str) -> None:
    """The runtime serves only the file whose SHA-256 the manifest records."""
    name = "open_nsfw.onnx" if runtime == "onnxruntime" else "open_nsfw.tflite"
    shutil.copy(MODEL_DIR / "manifest.json", tmp_path / "manifest.json")
    (tmp_path / name).write_bytes((MODEL_DIR / name).read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelLoadError, match="does not match the manifest"):
        Model(tmp_path, runtime).load()
    (tmp_path / name).unlink()
    with pytest.raises(ModelLoadError, match="is missing") as missing:
        Model(tmp_path, runtime).load()
    # Says what to do, not only what is wrong.
    assert "make model" in str(missing.value)
    if runtime == "litert":
        assert "WITH_LITERT=1" in str(missing.value)
