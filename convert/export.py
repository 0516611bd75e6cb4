"""Passes ``export_saved_model`` and ``export_tflite``: the artifacts the function serves.

The .tflite is converted from the exported SavedModel directory (not from the in-memory
module), so it is provably derived from the artifact that was verified.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import tensorflow as tf
from tensorflow.core.protobuf import fingerprint_pb2

from convert.network import OpenNSFW

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"


def export_saved_model(module: OpenNSFW, path: Path) -> None:
    tf.saved_model.save(
        module,
        str(path),
        signatures={SIGNATURE: module.serve.get_concrete_function()},
        # The fingerprint is derived from the content, and keeping debug info out keeps
        # source paths of this checkout out of the artifact.
        options=tf.saved_model.SaveOptions(save_debug_info=False),
    )
    _make_fingerprint_deterministic(path / "fingerprint.pb")
    log.info("saved model written to %s", path)


def _make_fingerprint_deterministic(path: Path) -> None:
    """Pass ``deterministic_fingerprint``: derive fingerprint.pb's ``uuid`` from the content.

    TensorFlow fills the uuid with random bits on every save, which alone would change the
    artifact's sha256 on each rebuild. Every other fingerprint field is a content hash, so a
    uuid derived from them still identifies this model while making rebuilds byte-identical.
    """
    if not path.is_file():
        return
    fingerprint = fingerprint_pb2.FingerprintDef()
    fingerprint.ParseFromString(path.read_bytes())
    fingerprint.ClearField("uuid")
    content = fingerprint.SerializeToString(deterministic=True)
    fingerprint.uuid = str(int.from_bytes(hashlib.sha256(content).digest()[:16], "big"))
    path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def export_tflite(saved_model: Path, path: Path) -> None:
    """fp32 flatbuffer with the batch dimension left dynamic (no quantization, no opts)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), [SIGNATURE])
    converter.optimizations = []
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    path.write_bytes(converter.convert())
    log.info("tflite written to %s", path)
