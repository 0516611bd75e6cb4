"""Pass ``export_onnx``: the SavedModel's weights as an ONNX graph, for onnxruntime.

On the CPUs this project is measured on, onnxruntime's fp32 convolutions (MLAS) run the same
network ~1.4× faster than LiteRT's XNNPACK (docs/performance.md), so the function can serve
this form too. Like the .tflite it is *derived from the exported SavedModel*: every weight is
read back from the SavedModel's variables (already BatchNorm-folded), and the verify pass
compares the two on the verification tensors.

The graph takes the same input as the SavedModel (``images``: NHWC, BGR, mean-subtracted) and
transposes to ONNX's NCHW once; Caffe's arithmetic maps onto ONNX directly: symmetric conv
pads, and ``ceil_mode`` max pooling (ONNX, like Caffe, ignores windows past the border).
Layer names are the prototxt's, as in the SavedModel.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from convert.architecture import resnet_50_1by2
from convert.passes import LayerSpec, TopologyError, field, int_field, sub

OPSET = 17


class OnnxGraph:
    """Emits one ONNX node per Caffe layer, reading weights by ``<layer>/<what>`` name."""

    def __init__(self, specs: tuple[LayerSpec, ...], params: Mapping[str, np.ndarray]) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._params = params
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _weight(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(self, name: str, x: str) -> str:
        spec = self._specs[name]
        conv = sub(spec.params, "convolution_param")
        stride, pad = int_field(conv, "stride", 1), int_field(conv, "pad", 0)
        if f"{name}/weights" not in self._params:
            raise TopologyError(f"{name}: no weights in the SavedModel")
        kernel = self._params[f"{name}/weights"].transpose(3, 2, 0, 1)  # HWIO → OIHW
        inputs = [
            x,
            self._weight(f"{name}/W", kernel),
            self._weight(f"{name}/B", self._params[f"{name}/biases"]),
        ]
        self.nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [name],
                name=name,
                kernel_shape=list(kernel.shape[2:]),
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        return name

    def conv_bn_scale(self, suffix: str, x: str) -> str:
        if f"bn_{suffix}/mean" in self._params:
            raise TopologyError("ONNX export expects a BatchNorm-folded SavedModel")
        return self.conv(f"conv_{suffix}", x)

    def relu(self, name: str, x: str) -> str:
        self.nodes.append(helper.make_node("Relu", [x], [name], name=name))
        return name

    def eltwise_sum(self, name: str, a: str, b: str) -> str:
        self.nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        return name

    def pool(self, name: str, x: str) -> str:
        pool = sub(self._specs[name].params, "pooling_param")
        kernel, stride = int_field(pool, "kernel_size", 0), int_field(pool, "stride", 1)
        pad = int_field(pool, "pad", 0)
        if field(pool, "pool", "MAX") == "MAX":
            self.nodes.append(
                helper.make_node(
                    "MaxPool",
                    [x],
                    [name],
                    name=name,
                    kernel_shape=[kernel, kernel],
                    strides=[stride, stride],
                    pads=[pad] * 4,
                    ceil_mode=1,
                )
            )
        else:
            if pad:
                raise TopologyError(f"{name}: padded AVE pooling is not supported")
            self.nodes.append(
                helper.make_node(
                    "AveragePool",
                    [x],
                    [name],
                    name=name,
                    kernel_shape=[kernel, kernel],
                    strides=[stride, stride],
                )
            )
        return name

    def inner_product(self, name: str, x: str) -> str:
        self.nodes.append(helper.make_node("Flatten", [x], [f"{x}_flat"], name=f"{x}_flat"))
        dense = [
            self._weight(f"{name}/W", self._params[f"{name}/weights"]),
            self._weight(f"{name}/B", self._params[f"{name}/biases"]),
        ]
        self.nodes.append(helper.make_node("Gemm", [f"{x}_flat", *dense], [name], name=name))
        return name

    def build(self) -> onnx.ModelProto:
        self.nodes.append(
            helper.make_node("Transpose", ["images"], ["data"], name="data", perm=[0, 3, 1, 2])
        )  # NHWC → NCHW
        logits = resnet_50_1by2(self, "data")
        self.nodes.append(
            helper.make_node("Softmax", [logits], ["probabilities"], name="prob", axis=1)
        )
        # nsfw = probabilities[:, 1]; Gather takes an integer index, not a float weight.
        self.initializers.append(numpy_helper.from_array(np.array(1, dtype=np.int64), "nsfw_index"))
        self.nodes.append(
            helper.make_node(
                "Gather", ["probabilities", "nsfw_index"], ["nsfw"], name="nsfw", axis=1
            )
        )
        graph = helper.make_graph(
            self.nodes,
            "open_nsfw",
            [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 224, 224, 3])],
            [
                helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
                helper.make_tensor_value_info("nsfw", TensorProto.FLOAT, ["N"]),
            ],
            self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nsfwoid-convert"
        )
        model.ir_version = 8  # readable by every onnxruntime since 1.13
        onnx.checker.check_model(model, full_check=True)
        return model


def saved_model_params(saved_model: Path) -> dict[str, np.ndarray]:
    """Every weight of the exported SavedModel by its ``<layer>/<what>`` name."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model))
    return {name: variable.numpy() for name, variable in loaded.params.items()}


def export_onnx(specs: tuple[LayerSpec, ...], saved_model: Path, path: Path) -> None:
    model = OnnxGraph(specs, saved_model_params(saved_model)).build()
    # Deterministic bytes: no timestamps or paths go into an ONNX model.
    path.write_bytes(model.SerializeToString(deterministic=True))
