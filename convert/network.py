"""The open_nsfw ResNet-50-1by2 as a TensorFlow graph, NHWC, with Caffe's arithmetic.

The architecture is spelled out as block functions named after the prototxt's stages and
blocks, so each line maps to prototxt layers by name; kernel sizes, strides and pads are
still read from the prototxt, and every op checks that its Caffe bottoms are the blobs it is
fed (:class:`Flow`), so a wiring mistake fails the build instead of shifting scores.

Caffe arithmetic kept (passes ``caffe_padding`` and ``caffe_ceil_pooling``):

* Convolution pads ``pad`` on both sides and floors the output size. TF ``SAME`` puts the
  odd pixel after, so it is only used where both agree exactly (3×3/1 pad 1); conv_1
  (7×7/2 pad 3 on 224) gets explicit ``[3, 3]`` padding.
* Pooling ceils the output size and clips windows at the border. MAX uses ``SAME`` when its
  implicit padding is Caffe's (pool1 3×3/2 on 112 → 56), else explicit −inf padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import tensorflow as tf

from convert.architecture import resnet_50_1by2
from convert.passes import LayerSpec, NetWeights, TopologyError, field, int_field, sub

INPUT_SIZE = 224


@dataclass(frozen=True)
class Padding:
    """How a Caffe window op maps onto TF: a TF padding mode or explicit before/after pads."""

    mode: Literal["SAME", "VALID", "EXPLICIT"]
    before: int
    after: int
    out: int


def _same(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def caffe_conv_padding(size: int, kernel: int, stride: int, pad: int) -> Padding:
    """Caffe conv output is ``floor((size + 2·pad − kernel) / stride) + 1``."""
    out = (size + 2 * pad - kernel) // stride + 1
    same_out, same_before, _ = _same(size, kernel, stride)
    if same_out == out and same_before == pad:
        return Padding("SAME", pad, pad, out)
    if pad == 0:
        return Padding("VALID", 0, 0, out)
    return Padding("EXPLICIT", pad, pad, out)


def caffe_pool_padding(size: int, kernel: int, stride: int, pad: int) -> Padding:
    """Caffe pool output is ``ceil((size + 2·pad − kernel) / stride) + 1``, minus one when
    the last window would start inside the padding only (pooling_layer.cpp)."""
    out = math.ceil((size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    after = max((out - 1) * stride + kernel - size - pad, 0)
    same_out, same_before, same_after = _same(size, kernel, stride)
    if (same_out, same_before, same_after) == (out, pad, after):
        return Padding("SAME", pad, after, out)
    if pad == 0 and after == 0:
        return Padding("VALID", 0, 0, out)
    return Padding("EXPLICIT", pad, after, out)


def conv2d(
    x: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, stride: int, pad: int, name: str
) -> tf.Tensor:
    """Caffe Convolution on NHWC (square kernel, symmetric pad)."""
    size = int(x.shape[1])
    padding = caffe_conv_padding(size, int(kernel.shape[0]), stride, pad)
    tf_padding: str | list[list[int]] = padding.mode
    if padding.mode == "EXPLICIT":
        tf_padding = [[0, 0], [pad, pad], [pad, pad], [0, 0]]
    y = tf.nn.conv2d(x, kernel, strides=stride, padding=tf_padding, name="Conv2D")
    return tf.nn.bias_add(y, bias, name=name)


def pool2d(
    x: tf.Tensor, method: Literal["MAX", "AVE"], kernel: int, stride: int, pad: int, name: str
) -> tf.Tensor:
    """Caffe Pooling on NHWC: ceil-mode output, windows clipped at the border."""
    padding = caffe_pool_padding(int(x.shape[1]), kernel, stride, pad)
    if method == "AVE":
        # Caffe divides by the window clipped to [−pad, size + pad): with pad 0 that is the
        # in-image count, which is what TF's pooling does; padded AVE would differ.
        if pad != 0:
            raise TopologyError(f"{name}: AVE pooling with pad={pad} is not supported")
        mode = "SAME" if padding.mode == "SAME" else "VALID"
        if padding.mode == "EXPLICIT":
            raise TopologyError(f"{name}: AVE pooling needs padding {padding}")
        return tf.nn.avg_pool2d(x, kernel, stride, mode, name=name)
    if padding.mode == "EXPLICIT":
        # −inf so padding never wins a max: Caffe's windows simply skip those pixels.
        pads = [[0, 0], [padding.before, padding.after], [padding.before, padding.after], [0, 0]]
        x = tf.pad(x, pads, constant_values=-math.inf)
        return tf.nn.max_pool2d(x, kernel, stride, "VALID", name=name)
    return tf.nn.max_pool2d(x, kernel, stride, padding.mode, name=name)


@dataclass(frozen=True)
class Flow:
    """A tensor together with the Caffe blob name it stands for."""

    tensor: tf.Tensor
    blob: str


class OpenNSFW(tf.Module):
    """The exported module: ``serve`` (the signature), ``logits`` (for verification only)."""

    def __init__(self, specs: tuple[LayerSpec, ...], weights: NetWeights) -> None:
        super().__init__(name="open_nsfw")
        self._specs = {spec.name: spec for spec in specs}
        self._weights = weights
        self.folded = bool(weights.folded_into)
        # tf.Variables (not captured constants) so the SavedModel keeps the weights in its
        # variables/ checkpoint, where the TFLite converter freezes them.
        self.params: dict[str, tf.Variable] = {}
        for name, conv in weights.conv.items():
            self._param(name, "weights", conv.kernel)
            self._param(name, "biases", conv.bias)
        for name, bn in weights.batchnorm.items():
            self._param(name, "mean", bn.mean)
            self._param(name, "variance", bn.variance)
        for name, scale in weights.scale.items():
            self._param(name, "gamma", scale.gamma)
            self._param(name, "beta", scale.beta)
        for name, dense in weights.dense.items():
            self._param(name, "weights", dense.kernel)
            self._param(name, "biases", dense.bias)
        self._used: set[str] = set()
        self.serve.get_concrete_function()  # trace once now so the audit below sees all ops
        self._audit()

    def _param(self, layer: str, what: str, value: object) -> None:
        self.params[f"{layer}/{what}"] = tf.Variable(
            value, trainable=False, name=f"{layer}/{what}", dtype=tf.float32
        )

    # --- one Caffe layer each ---------------------------------------------------------------

    def _spec(self, name: str, type_: str, inputs: tuple[Flow, ...]) -> LayerSpec:
        spec = self._specs.get(name)
        if spec is None or spec.type != type_:
            raise TopologyError(f"prototxt has no {type_} layer {name}")
        fed = tuple(flow.blob for flow in inputs)
        if spec.bottoms != fed:
            raise TopologyError(f"{name}: prototxt bottoms {spec.bottoms}, graph feeds {fed}")
        self._used.add(name)
        return spec

    def _conv(self, name: str, x: Flow) -> Flow:
        spec = self._spec(name, "Convolution", (x,))
        conv = sub(spec.params, "convolution_param")
        with tf.name_scope(name):
            y = conv2d(
                x.tensor,
                self.params[f"{name}/weights"],
                self.params[f"{name}/biases"],
                stride=int_field(conv, "stride", 1),
                pad=int_field(conv, "pad", 0),
                name=name,
            )
        return Flow(y, spec.tops[0])

    def _batchnorm(self, name: str, x: Flow) -> Flow:
        spec = self._spec(name, "BatchNorm", (x,))
        if name in self._weights.folded_into:
            return Flow(x.tensor, spec.tops[0])  # already inside the conv's weights
        with tf.name_scope(name):
            mean = self.params[f"{name}/mean"]
            variance = self.params[f"{name}/variance"]
            y = (x.tensor - mean) / tf.sqrt(variance + self._weights.epsilon)
        return Flow(tf.identity(y, name=name), spec.tops[0])

    def _scale(self, name: str, x: Flow) -> Flow:
        spec = self._spec(name, "Scale", (x,))
        if name in self._weights.folded_into:
            return Flow(x.tensor, spec.tops[0])
        with tf.name_scope(name):
            y = x.tensor * self.params[f"{name}/gamma"] + self.params[f"{name}/beta"]
        return Flow(tf.identity(y, name=name), spec.tops[0])

    def relu(self, name: str, x: Flow) -> Flow:
        spec = self._spec(name, "ReLU", (x,))
        return Flow(tf.nn.relu(x.tensor, name=name), spec.tops[0])

    def pool(self, name: str, x: Flow) -> Flow:
        spec = self._spec(name, "Pooling", (x,))
        pool = sub(spec.params, "pooling_param")
        method = str(field(pool, "pool", "MAX"))
        if method not in ("MAX", "AVE"):
            raise TopologyError(f"{name}: pooling {method} not supported")
        kernel = int_field(pool, "kernel_size", 0)
        if field(pool, "global_pooling", False):
            kernel = int(x.tensor.shape[1])
        y = pool2d(
            x.tensor,
            "MAX" if method == "MAX" else "AVE",
            kernel,
            int_field(pool, "stride", 1),
            int_field(pool, "pad", 0),
            name=name,
        )
        return Flow(y, spec.tops[0])

    def eltwise_sum(self, name: str, a: Flow, b: Flow) -> Flow:
        spec = self._spec(name, "Eltwise", (a, b))
        operation = field(sub(spec.params, "eltwise_param"), "operation", "SUM")
        if operation != "SUM" or "coeff" in sub(spec.params, "eltwise_param"):
            raise TopologyError(f"{name}: only plain Eltwise SUM is supported")
        return Flow(tf.add(a.tensor, b.tensor, name=name), spec.tops[0])

    def inner_product(self, name: str, x: Flow) -> Flow:
        spec = self._spec(name, "InnerProduct", (x,))
        # Caffe flattens NCHW; that equals an NHWC flatten only for 1×1 spatial input.
        if tuple(x.tensor.shape[1:3]) != (1, 1):
            raise TopologyError(f"{name}: expects 1×1 spatial input, got {x.tensor.shape}")
        with tf.name_scope(name):
            flat = tf.reshape(x.tensor, [-1, int(x.tensor.shape[3])])
            y = tf.matmul(flat, self.params[f"{name}/weights"]) + self.params[f"{name}/biases"]
        return Flow(tf.identity(y, name=name), spec.tops[0])

    # --- the architecture ---------------------------------------------------------------------

    def conv_bn_scale(self, suffix: str, x: Flow) -> Flow:
        """``conv_<suffix>`` → ``bn_<suffix>`` → ``scale_<suffix>`` (in place in Caffe)."""
        y = self._conv(f"conv_{suffix}", x)
        y = self._batchnorm(f"bn_{suffix}", y)
        return self._scale(f"scale_{suffix}", y)

    def _forward(self, images: tf.Tensor) -> Flow:
        return resnet_50_1by2(self, Flow(images, "data"))

    def _audit(self) -> None:
        """Every prototxt layer must have been used exactly by name (Input/Softmax aside)."""
        expected = {name for name, spec in self._specs.items() if spec.type != "Input"}
        if self._used != expected:
            raise TopologyError(
                f"graph/prototxt mismatch: unused {sorted(expected - self._used)}, "
                f"unknown {sorted(self._used - expected)}"
            )

    @tf.function(
        input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, "images")]
    )
    def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        fc = self._forward(images)
        self._spec("prob", "Softmax", (fc,))
        probabilities = tf.nn.softmax(fc.tensor, name="prob")
        return {
            "probabilities": tf.identity(probabilities, name="probabilities"),
            "nsfw": tf.identity(probabilities[:, 1], name="nsfw"),
        }

    @tf.function(
        input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, "images")]
    )
    def logits(self, images: tf.Tensor) -> tf.Tensor:
        return self._forward(images).tensor
