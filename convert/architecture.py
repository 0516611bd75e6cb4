"""ResNet-50 "1by2" as open_nsfw's deploy.prototxt lays it out: written once, for every backend.

The TensorFlow graph (``network.py``) and the ONNX graph (``onnx_export.py``) each implement the
five Caffe layer kinds of :class:`Layers`; this walk calls them with the prototxt's layer names,
stage by stage and block by block, so the two graphs cannot drift apart and each line maps to
prototxt layers by name.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

T = TypeVar("T")

STAGES = (3, 4, 6, 3)
"""Bottleneck blocks per stage, as in the prototxt (``stage0``…``stage3``)."""


class Layers(Protocol[T]):
    def conv_bn_scale(self, suffix: str, x: T) -> T:
        """``conv_<suffix>`` → ``bn_<suffix>`` → ``scale_<suffix>`` (in place in Caffe)."""
        ...

    def relu(self, name: str, x: T) -> T: ...

    def eltwise_sum(self, name: str, a: T, b: T) -> T: ...

    def pool(self, name: str, x: T) -> T: ...

    def inner_product(self, name: str, x: T) -> T: ...


def bottleneck(net: Layers[T], stage: int, block: int, x: T) -> T:
    """``stage<s>_block<b>``: 1×1 → 3×3 → 1×1, projection shortcut on each stage's block0."""
    tag = f"stage{stage}_block{block}"
    shortcut = net.conv_bn_scale(f"{tag}_proj_shortcut", x) if block == 0 else x
    y = net.relu(f"relu_{tag}_branch2a", net.conv_bn_scale(f"{tag}_branch2a", x))
    y = net.relu(f"relu_{tag}_branch2b", net.conv_bn_scale(f"{tag}_branch2b", y))
    y = net.conv_bn_scale(f"{tag}_branch2c", y)
    return net.relu(f"relu_{tag}", net.eltwise_sum(f"eltwise_{tag}", shortcut, y))


def resnet_50_1by2(net: Layers[T], data: T) -> T:
    """``data`` → ``fc_nsfw`` (the logits; ``prob`` is the backend's softmax)."""
    x = net.relu("relu_1", net.conv_bn_scale("1", data))
    x = net.pool("pool1", x)
    for stage, blocks in enumerate(STAGES):
        for block in range(blocks):
            x = bottleneck(net, stage, block, x)
    x = net.pool("pool", x)
    return net.inner_product("fc_nsfw", x)
