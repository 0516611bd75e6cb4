"""Weight passes between the raw Caffe blobs and the TensorFlow graph.

Each pass is a pure function from one frozen value to the next, named in the manifest:

* ``check_topology``: every learnable prototxt layer has blobs of the shape its params imply.
* ``import_weights``: Caffe layouts → TensorFlow layouts, BatchNorm scale factor applied
  (``caffe_to_tf_layout``, ``batchnorm_scale_factor``).
* ``fold_batchnorm_scale``: inference-time BatchNorm+Scale merged into the preceding conv.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from convert.caffe import CaffeLayer, TextMessage

Array = npt.NDArray[np.float32]

BATCHNORM_EPSILON = 1e-5
"""Caffe's ``BatchNormParameter.eps`` default; deploy.prototxt sets none."""


class TopologyError(ValueError):
    """The prototxt and the caffemodel disagree."""


@dataclass(frozen=True)
class LayerSpec:
    """One prototxt layer: what the graph builder needs to know about it."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    params: TextMessage


def field(message: TextMessage, key: str, default: object = None) -> object:
    """First value of a text-format field (Caffe's non-repeated fields), or ``default``."""
    values = message.get(key)
    return values[0] if values else default


def sub(message: TextMessage, key: str) -> TextMessage:
    value = field(message, key, {})
    if not isinstance(value, dict):
        raise TopologyError(f"{key} is not a message")
    return value


def int_field(message: TextMessage, key: str, default: int) -> int:
    value = field(message, key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TopologyError(f"{key}={value!r} is not an integer")
    return value


def layer_specs(prototxt: TextMessage) -> tuple[LayerSpec, ...]:
    specs = []
    for layer in prototxt.get("layer", []):
        if not isinstance(layer, dict):
            raise TopologyError("layer is not a message")
        specs.append(
            LayerSpec(
                name=str(field(layer, "name", "")),
                type=str(field(layer, "type", "")),
                bottoms=tuple(str(b) for b in layer.get("bottom", [])),
                tops=tuple(str(t) for t in layer.get("top", [])),
                params=layer,
            )
        )
    if not specs:
        raise TopologyError("prototxt has no layers")
    return tuple(specs)


@dataclass(frozen=True)
class ConvWeights:
    kernel: Array  # [kh, kw, in, out]
    bias: Array  # [out]


@dataclass(frozen=True)
class BatchNormWeights:
    mean: Array  # already divided by Caffe's moving-average scale factor
    variance: Array


@dataclass(frozen=True)
class ScaleWeights:
    gamma: Array
    beta: Array


@dataclass(frozen=True)
class DenseWeights:
    kernel: Array  # [in, out]
    bias: Array


@dataclass(frozen=True)
class NetWeights:
    """All learned parameters in TensorFlow layouts, keyed by prototxt layer name."""

    conv: Mapping[str, ConvWeights]
    batchnorm: Mapping[str, BatchNormWeights]
    scale: Mapping[str, ScaleWeights]
    dense: Mapping[str, DenseWeights]
    epsilon: float
    folded_into: Mapping[str, str]
    """BatchNorm/Scale layer → the conv it was folded into (empty when unfolded)."""


def _expected_blob_shapes(spec: LayerSpec, channels: int | None) -> list[tuple[int, ...]]:
    if spec.type == "Convolution":
        conv = sub(spec.params, "convolution_param")
        out = int_field(conv, "num_output", 0)
        k = int_field(conv, "kernel_size", 0)
        shapes: list[tuple[int, ...]] = [(out, channels or -1, k, k)]
        if field(conv, "bias_term", True):
            shapes.append((out,))
        return shapes
    if spec.type == "InnerProduct":
        out = int_field(sub(spec.params, "inner_product_param"), "num_output", 0)
        return [(out, channels or -1), (out,)]
    if spec.type == "BatchNorm":
        return [(channels or -1,), (channels or -1,), (1,)]
    if spec.type == "Scale":
        bias = field(sub(spec.params, "scale_param"), "bias_term", False)
        return [(channels or -1,)] * (2 if bias else 1)
    return []


def check_topology(specs: tuple[LayerSpec, ...], layers: tuple[CaffeLayer, ...]) -> None:
    """Fail unless every learnable prototxt layer has blobs of the implied shapes.

    The caffemodel is the training net (MemoryData, Split, SoftmaxWithLoss), so layers are
    matched by name, and channel counts are propagated through the deploy topology.
    """
    by_name = {layer.name: layer for layer in layers}
    channels: dict[str, int] = {}
    for spec in specs:
        if spec.type == "Input":
            dims = field(sub(spec.params, "input_param"), "shape", {})
            if not isinstance(dims, dict):
                raise TopologyError("input_param.shape is not a message")
            channels[spec.tops[0]] = int(dims["dim"][1])
            continue
        c_in = channels.get(spec.bottoms[0]) if spec.bottoms else None
        expected = _expected_blob_shapes(spec, c_in)
        if expected:
            layer = by_name.get(spec.name)
            if layer is None:
                raise TopologyError(f"{spec.name}: no blobs in the caffemodel")
            actual = [tuple(blob.shape) for blob in layer.blobs]
            if actual != expected:
                raise TopologyError(f"{spec.name}: blob shapes {actual}, expected {expected}")
        if spec.type in ("Convolution", "InnerProduct"):
            c_out = expected[0][0]
        else:
            c_out = c_in or 0
        for top in spec.tops:
            channels[top] = c_out


def batchnorm_statistics(blobs: tuple[Array, ...]) -> BatchNormWeights:
    """Pass ``batchnorm_scale_factor``: Caffe stores running sums plus their weight.

    Caffe (batch_norm_layer.cpp) multiplies mean and variance by ``1 / blobs[2][0]``, or by
    0 when that factor is 0 (a never-updated layer), and we do exactly the same.
    """
    factor = float(blobs[2][0])
    multiplier = np.float32(0.0 if factor == 0 else 1.0 / factor)
    return BatchNormWeights(mean=blobs[0] * multiplier, variance=blobs[1] * multiplier)


def import_weights(
    specs: tuple[LayerSpec, ...],
    layers: tuple[CaffeLayer, ...],
    epsilon: float = BATCHNORM_EPSILON,
) -> NetWeights:
    """Caffe blobs → :class:`NetWeights` (pass ``caffe_to_tf_layout``)."""
    by_name = {layer.name: layer for layer in layers}
    conv: dict[str, ConvWeights] = {}
    batchnorm: dict[str, BatchNormWeights] = {}
    scale: dict[str, ScaleWeights] = {}
    dense: dict[str, DenseWeights] = {}
    for spec in specs:
        blobs = by_name[spec.name].blobs if spec.name in by_name else ()
        if spec.type == "Convolution":
            # Caffe [out, in, kh, kw] → TF HWIO [kh, kw, in, out].
            kernel = np.ascontiguousarray(blobs[0].transpose(2, 3, 1, 0))
            bias = blobs[1] if len(blobs) > 1 else np.zeros(kernel.shape[3], np.float32)
            conv[spec.name] = ConvWeights(kernel, bias)
        elif spec.type == "BatchNorm":
            batchnorm[spec.name] = batchnorm_statistics(blobs)
        elif spec.type == "Scale":
            beta = blobs[1] if len(blobs) > 1 else np.zeros_like(blobs[0])
            scale[spec.name] = ScaleWeights(blobs[0], beta)
        elif spec.type == "InnerProduct":
            # Caffe y = W x with W [out, in]; TF y = x K with K [in, out].
            dense[spec.name] = DenseWeights(np.ascontiguousarray(blobs[0].T), blobs[1])
    return NetWeights(conv, batchnorm, scale, dense, epsilon, folded_into={})


def fold_batchnorm_scale(specs: tuple[LayerSpec, ...], weights: NetWeights) -> NetWeights:
    """Merge each in-place Convolution → BatchNorm → Scale chain into the convolution.

    With s = γ / √(σ² + ε): w' = w·s per output channel and b' = (b − μ)·s + β. Chains are
    found from the wiring (which layer last wrote the blob), never from naming conventions.
    """
    producer: dict[str, LayerSpec] = {}
    conv = dict(weights.conv)
    folded: dict[str, str] = {}
    pending: dict[str, tuple[str, BatchNormWeights]] = {}  # blob → (conv name, bn stats)
    for spec in specs:
        source = producer.get(spec.bottoms[0]) if spec.bottoms else None
        if spec.type == "BatchNorm" and source is not None and source.type == "Convolution":
            pending[spec.tops[0]] = (source.name, weights.batchnorm[spec.name])
            folded[spec.name] = source.name
        elif spec.type == "Scale" and spec.bottoms[0] in pending and source is not None:
            if source.type != "BatchNorm":
                raise TopologyError(f"{spec.name}: Scale does not follow its BatchNorm")
            conv_name, stats = pending.pop(spec.bottoms[0])
            affine = weights.scale[spec.name]
            inv_std = (1.0 / np.sqrt(stats.variance.astype(np.float64) + weights.epsilon)).astype(
                np.float64
            )
            factor = affine.gamma.astype(np.float64) * inv_std
            original = conv[conv_name]
            kernel = (original.kernel.astype(np.float64) * factor).astype(np.float32)
            bias = ((original.bias.astype(np.float64) - stats.mean) * factor + affine.beta).astype(
                np.float32
            )
            conv[conv_name] = ConvWeights(kernel, bias)
            folded[spec.name] = conv_name
        for top in spec.tops:
            producer[top] = spec
    if pending:
        raise TopologyError(f"BatchNorm without a following Scale: {sorted(pending)}")
    return replace(
        weights,
        conv=conv,
        batchnorm={k: v for k, v in weights.batchnorm.items() if k not in folded},
        scale={k: v for k, v in weights.scale.items() if k not in folded},
        folded_into=folded,
    )
