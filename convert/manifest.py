"""Pass ``write_manifest``: what was built, from what, and how well it was verified.

The file is deterministic (sorted keys, no timestamps), so rebuilding from the same pins with
the same toolchain yields the same bytes. The serving code reads ``version`` and
``artifacts.<runtime>.path`` / ``.sha256``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from convert.source import PACKAGE, PINS, sha256_file

NAME = "open_nsfw"
VERSION = "1.0.0"
MANIFEST = "manifest.json"
SAVED_MODEL = "open_nsfw"
TFLITE = "open_nsfw.tflite"
ONNX = "open_nsfw.onnx"

DIRECTORY_SHA256_METHOD = (
    "sha256 of the lines '<file sha256>  <relative posix path>\\n' for every file under the "
    "directory, sorted by path (byte order): the output of "
    "`find . -type f | sed 's|^./||' | LC_ALL=C sort | xargs sha256sum | sha256sum`"
)


def directory_sha256(root: Path) -> str:
    files = sorted(
        (path.relative_to(root).as_posix(), path) for path in root.rglob("*") if path.is_file()
    )
    listing = "".join(f"{sha256_file(path)}  {relative}\n" for relative, path in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def artifact_hashes(out: Path) -> dict[str, str]:
    return {
        "saved_model": directory_sha256(out / SAVED_MODEL),
        "tflite": sha256_file(out / TFLITE),
        "onnx": sha256_file(out / ONNX),
    }


def signature() -> dict[str, Any]:
    return {
        "name": "serving_default",
        "inputs": {
            "images": {
                "dtype": "float32",
                "shape": [None, 224, 224, 3],
                "layout": "NHWC",
                "channels": "BGR",
                "mean": [104, 117, 123],
                "preprocess": "function.preprocess.reference_tensor / image_to_tensor",
            }
        },
        "outputs": {
            "probabilities": {
                "dtype": "float32",
                "shape": [None, 2],
                "classes": ["sfw", "nsfw"],
            },
            "nsfw": {"dtype": "float32", "shape": [None], "equals": "probabilities[:, 1]"},
        },
    }


def build_manifest(
    out: Path,
    *,
    tensorflow_version: str,
    passes: list[str],
    epsilon: float,
    parity: dict[str, Any],
) -> dict[str, Any]:
    hashes = artifact_hashes(out)
    return {
        "name": NAME,
        "version": VERSION,
        "source": {
            "package": PACKAGE,
            "files": {pin.name: {"sha256": pin.sha256, "member": pin.member} for pin in PINS},
        },
        "converter": {
            "tensorflow": tensorflow_version,
            "passes": passes,
            "batchnorm_epsilon": epsilon,
        },
        "signature": signature(),
        "artifacts": {
            "saved_model": {
                "path": SAVED_MODEL,
                "sha256": hashes["saved_model"],
                "sha256_method": DIRECTORY_SHA256_METHOD,
            },
            "tflite": {
                "path": TFLITE,
                "sha256": hashes["tflite"],
                "precision": "float32",
                "batch": "dynamic",
            },
            "onnx": {
                "path": ONNX,
                "sha256": hashes["onnx"],
                "precision": "float32",
                "batch": "dynamic",
                "opset": 17,
            },
        },
        "parity": parity,
    }


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def is_up_to_date(out: Path) -> bool:
    """True when the manifest names the pinned sources and the artifacts on disk match it.

    Cheap by design (no TensorFlow import): this is what lets `make model` be a no-op.
    """
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["source"]["files"]
        if manifest["source"]["package"] != PACKAGE:
            return False
        if any(files[pin.name]["sha256"] != pin.sha256 for pin in PINS):
            return False
        artifacts = manifest["artifacts"]
        saved = out / artifacts["saved_model"]["path"]
        tflite = out / artifacts["tflite"]["path"]
        onnx = out / artifacts["onnx"]["path"]
        if not saved.is_dir() or not tflite.is_file() or not onnx.is_file():
            return False
        return bool(
            directory_sha256(saved) == artifacts["saved_model"]["sha256"]
            and sha256_file(tflite) == artifacts["tflite"]["sha256"]
            and sha256_file(onnx) == artifacts["onnx"]["sha256"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
