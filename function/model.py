"""The model: a small class with an explicit life cycle (load → warm up → ready → predict).

Three runtimes serve the same converted network behind one interface: ``onnxruntime`` (the
ONNX export of the SavedModel on MLAS kernels: the default, fastest on the CPUs measured),
``litert`` (the ``.tflite`` derived from the SavedModel, on XNNPACK) and ``tensorflow`` (the
canonical SavedModel itself). Only the last needs TensorFlow. Their heavy imports happen in
``load`` so that importing the function stays cheap for a cold start.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from function.preprocess import CROP

Batch = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float32]


ARTEFACTS = {"litert": "tflite", "onnxruntime": "onnx", "tensorflow": "saved_model"}
"""Which of the manifest's artefacts each runtime serves."""


class ModelLoadError(RuntimeError):
    """The model files are missing, do not match the manifest, or do not load."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    runtime: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


class Runtime(Protocol):
    def predict(self, batch: Batch, alone: bool) -> Scores:
        """``[N, 224, 224, 3]`` BGR mean-subtracted float32 → NSFW probabilities ``[N]``.

        ``alone``: nothing else is being scored, so CPU spent on this call's latency is
        taken from no other request. Scores never depend on it."""
        ...


class LiteRTRuntime:
    """The ``.tflite`` on LiteRT with XNNPACK; not thread-safe, so one caller at a time."""

    def __init__(self, path: Path, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
        self._runner = self._interpreter.get_signature_runner("serving_default")

    def predict(self, batch: Batch, alone: bool) -> Scores:
        # The runner resizes the dynamic batch dimension only when it changes.
        out: dict[str, Any] = self._runner(images=batch)
        return np.asarray(out["nsfw"], dtype=np.float32).reshape(-1)


_LITERT_IMAGE = "the Containerfile with --build-arg WITH_LITERT=1, or Blubber's production-litert"


def _litert(path: Path, threads: int) -> LiteRTRuntime:
    try:
        return LiteRTRuntime(path, threads)
    except ImportError as exc:  # the default install leaves LiteRT out
        raise ModelLoadError(
            "NSFWOID_RUNTIME=litert needs the ai-edge-litert package: install "
            f"requirements-litert.lock, or use {_LITERT_IMAGE}"
        ) from exc


class OnnxRuntime:
    """Our ONNX export of the SavedModel on onnxruntime's CPU provider (MLAS kernels).

    With ``spin`` (the default) it keeps two sessions of the same file, because no single
    thread-pool setting suits both kinds of traffic on small virtual machines:

    - a request scored *alone* runs on a pool whose threads spin between runs. The next
      request arriving within ~0.15 s then finds its vCPUs awake instead of waking the pool
      once per layer.
    - with other requests in flight, spinning only steals a core from the threads decoding
      them (a pool thread spins whenever its partner is preempted), so those runs go to a
      pool that never spins.

    The second session costs some memory; what each side gains is measured in
    docs/performance.md. Without ``spin`` one never-spinning session serves all.
    """

    def __init__(self, path: Path, threads: int, spin: bool = True) -> None:
        import onnxruntime as ort

        def session(spinning: bool) -> Any:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if not spinning:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        self._busy = session(spinning=False)
        self._alone = session(spinning=True) if spin else self._busy

    def predict(self, batch: Batch, alone: bool) -> Scores:
        session = self._alone if alone else self._busy
        (nsfw,) = session.run(["nsfw"], {"images": batch})
        return np.asarray(nsfw, dtype=np.float32).reshape(-1)


class TensorFlowRuntime:
    """The canonical SavedModel through its ``serving_default`` signature."""

    def __init__(self, path: Path, threads: int) -> None:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            # TensorFlow already ran in this process (the converter, a test): its thread
            # pools are fixed by then and serve as they are.
            pass
        self._tf = tf
        self._loaded = tf.saved_model.load(str(path))
        self._signature = self._loaded.signatures["serving_default"]

    def predict(self, batch: Batch, alone: bool) -> Scores:
        out = self._signature(images=self._tf.constant(batch))
        return np.asarray(out["nsfw"].numpy(), dtype=np.float32).reshape(-1)


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class Model:
    """Owns one runtime. ``predict`` is serialised: callers batch instead of racing."""

    def __init__(
        self, model_dir: Path, runtime: str = "onnxruntime", threads: int = 2, spin: bool = True
    ) -> None:
        self.model_dir = model_dir
        self.runtime_name = runtime
        self.threads = threads
        self.spin = spin
        self.info: ModelInfo | None = None
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Read the manifest, check the artefact's hash, build the runtime."""
        started = time.perf_counter()
        manifest_path = self.model_dir / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            artefact = manifest["artifacts"][ARTEFACTS[self.runtime_name]]
            path = self.model_dir / artefact["path"]
            expected = str(artefact["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(
                f"no usable manifest at {manifest_path}; build the model with `make model`"
            ) from exc
        if self.runtime_name in ("litert", "onnxruntime"):
            if not path.is_file():
                # The default image ships the ONNX model only: say what to build instead.
                image = _LITERT_IMAGE if self.runtime_name == "litert" else "the default image"
                raise ModelLoadError(
                    f"{path} is missing: NSFWOID_RUNTIME={self.runtime_name} serves it; "
                    f"build it with `make model`, or use {image}"
                )
            actual = _sha256(path)
            if actual != expected:
                raise ModelLoadError(f"{path} sha256 {actual} does not match the manifest")
            self._runtime = (
                _litert(path, self.threads)
                if self.runtime_name == "litert"
                else OnnxRuntime(path, self.threads, self.spin)
            )
        elif self.runtime_name == "tensorflow":
            if not (path / "saved_model.pb").is_file():
                raise ModelLoadError(f"no SavedModel at {path}; build it with `make model`")
            self._runtime = TensorFlowRuntime(path, self.threads)
        else:
            raise ModelLoadError(f"unknown runtime {self.runtime_name!r}")
        self.info = ModelInfo(
            name=str(manifest.get("name", "open_nsfw")),
            version=str(manifest.get("version", "unknown")),
            sha256=expected,
            runtime=self.runtime_name,
        )
        self.load_seconds = time.perf_counter() - started

    def warm_up(self) -> None:
        """Real inferences before readiness: a runtime's first call pays for its setup
        (both of onnxruntime's sessions: see ``OnnxRuntime``)."""
        started = time.perf_counter()
        for alone in (False, True):
            self.predict(np.zeros((1, CROP, CROP, 3), dtype=np.float32), alone=alone)
        self.warmup_seconds = time.perf_counter() - started
        self._ready.set()

    def predict(self, batch: Batch, *, alone: bool = False) -> Scores:
        """Scores for ``batch``; ``alone`` says nothing else is being scored (a hint)."""
        if self._runtime is None:
            raise ModelLoadError("model not loaded")
        with self._lock:
            return self._runtime.predict(np.ascontiguousarray(batch, dtype=np.float32), alone)
