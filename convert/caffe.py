"""Passes ``read_caffemodel`` and ``parse_prototxt``: Caffe's files read without Caffe.

Only the handful of protobuf fields the conversion needs are decoded, straight from the
wire format (see caffe.proto): NetParameter ``layer`` = 100 (``layers`` = 2 for the V1
format), LayerParameter name=1 type=2 bottom=3 top=4 blobs=7, BlobProto data=5 shape=7
(legacy num/channels/height/width = 1..4), BlobShape dim=1. Unknown fields are skipped by
wire type, which is all protobuf asks of a reader. This avoids a caffe/pb2 dependency whose
generated code would otherwise be the least trustworthy part of the chain.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

Blob = npt.NDArray[np.float32]

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class CaffeFormatError(ValueError):
    """The bytes or text are not the Caffe model they claim to be."""


@dataclass(frozen=True)
class CaffeLayer:
    """One layer of a binary ``.caffemodel``: identity, wiring and learned blobs."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    blobs: tuple[Blob, ...]


# --- protobuf wire format -------------------------------------------------------------------


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeFormatError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeFormatError("varint longer than 10 bytes")


WireValue: TypeAlias = int | memoryview


def iter_fields(buf: memoryview) -> Iterator[tuple[int, int, WireValue]]:
    """Yield ``(field number, wire type, value)``; length-delimited values stay zero-copy."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        value: WireValue
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == FIXED64:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == LENGTH:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise CaffeFormatError(f"field {field}: length {size} runs past the message")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == FIXED32:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise CaffeFormatError(f"field {field}: unsupported wire type {wire}")
        yield field, wire, value
    if pos != end:
        raise CaffeFormatError("message ends inside a field")


def _packed_varints(data: memoryview) -> list[int]:
    values = []
    pos = 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        values.append(value)
    return values


def _text(value: WireValue) -> str:
    if not isinstance(value, memoryview):
        raise CaffeFormatError("expected a length-delimited string")
    return bytes(value).decode("utf-8")


def _message(value: WireValue) -> memoryview:
    if not isinstance(value, memoryview):
        raise CaffeFormatError("expected a length-delimited sub-message")
    return value


def parse_blob(buf: memoryview) -> Blob:
    """BlobProto → float32 array in Caffe's layout (e.g. conv ``[out, in, kh, kw]``)."""
    shape: list[int] = []
    legacy = {1: 1, 2: 1, 3: 1, 4: 1}
    legacy_seen = False
    chunks: list[Blob] = []
    loose: list[int] = []
    for field, wire, value in iter_fields(buf):
        if field == 7:  # BlobShape
            for dim_field, dim_wire, dim in iter_fields(_message(value)):
                if dim_field != 1:
                    continue
                if dim_wire == LENGTH:
                    shape.extend(_packed_varints(_message(dim)))
                elif isinstance(dim, int):
                    shape.append(dim)
        elif field == 5:  # data, packed (normal) or one fixed32 per element (old writers)
            if wire == LENGTH:
                chunks.append(np.frombuffer(_message(value), dtype="<f4"))
            elif isinstance(value, int):
                loose.append(value)
        elif field in legacy and isinstance(value, int):
            legacy[field] = value
            legacy_seen = True
    if loose:
        chunks.append(np.array(loose, dtype="<u4").view("<f4"))
    data = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if not shape:
        shape = [legacy[1], legacy[2], legacy[3], legacy[4]] if legacy_seen else [data.size]
    if int(np.prod(shape)) != data.size:
        raise CaffeFormatError(f"blob shape {shape} does not hold {data.size} values")
    return data.astype(np.float32).reshape(shape)


# V1LayerParameter.LayerType values, for the legacy ``layers`` field; only the types a
# ResNet-style deploy net can contain are named.
_V1_TYPES = {
    3: "Concat",
    4: "Convolution",
    5: "Data",
    6: "Dropout",
    14: "InnerProduct",
    15: "LRN",
    17: "Pooling",
    18: "ReLU",
    20: "Softmax",
    25: "Eltwise",
}


def _parse_layer(buf: memoryview) -> CaffeLayer:
    name, type_ = "", ""
    bottoms: list[str] = []
    tops: list[str] = []
    blobs: list[Blob] = []
    for field, _, value in iter_fields(buf):
        if field == 1:
            name = _text(value)
        elif field == 2:
            type_ = _text(value)
        elif field == 3:
            bottoms.append(_text(value))
        elif field == 4:
            tops.append(_text(value))
        elif field == 7:
            blobs.append(parse_blob(_message(value)))
    return CaffeLayer(name, type_, tuple(bottoms), tuple(tops), tuple(blobs))


def _parse_v1_layer(buf: memoryview) -> CaffeLayer:
    # V1LayerParameter: bottom=2 top=3 name=4 type=5 (enum) blobs=6.
    name, type_ = "", ""
    bottoms: list[str] = []
    tops: list[str] = []
    blobs: list[Blob] = []
    for field, _, value in iter_fields(buf):
        if field == 4:
            name = _text(value)
        elif field == 5 and isinstance(value, int):
            type_ = _V1_TYPES.get(value, f"V1:{value}")
        elif field == 2:
            bottoms.append(_text(value))
        elif field == 3:
            tops.append(_text(value))
        elif field == 6:
            blobs.append(parse_blob(_message(value)))
    return CaffeLayer(name, type_, tuple(bottoms), tuple(tops), tuple(blobs))


def parse_caffemodel(data: bytes) -> tuple[CaffeLayer, ...]:
    """NetParameter bytes → its layers, in file order."""
    layers: list[CaffeLayer] = []
    for field, _, value in iter_fields(memoryview(data)):
        if field == 100:
            layers.append(_parse_layer(_message(value)))
        elif field == 2:
            layers.append(_parse_v1_layer(_message(value)))
    if not layers:
        raise CaffeFormatError("no layers found: not a Caffe NetParameter")
    return tuple(layers)


def read_caffemodel(path: Path) -> tuple[CaffeLayer, ...]:
    return parse_caffemodel(path.read_bytes())


# --- protobuf text format (prototxt) --------------------------------------------------------

Scalar: TypeAlias = str | int | float | bool
TextValue: TypeAlias = "Scalar | TextMessage"
TextMessage: TypeAlias = "dict[str, list[TextValue]]"
"""A text-format message: every field maps to a list, because any field may repeat."""

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<comment>\#[^\n]*)
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<punct>[{}:<>\[\],;])
      | (?P<word>[A-Za-z0-9_.+\-]+)
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[str]:
    tokens = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise CaffeFormatError(f"prototxt: unexpected character at offset {pos}")
        pos = match.end()
        if match.lastgroup != "comment":
            tokens.append(match.group(match.lastgroup or "word"))
    return tokens


def _scalar(token: str) -> Scalar:
    if token[0] in "\"'":
        return bytes(token[1:-1], "utf-8").decode("unicode_escape")
    if token in ("true", "True"):
        return True
    if token in ("false", "False"):
        return False
    try:
        return int(token)
    except ValueError:
        pass
    try:
        return float(token)
    except ValueError:
        return token  # an enum identifier such as MAX or AVE


def parse_prototxt(text: str) -> TextMessage:
    """Protobuf text format → nested dicts of lists (no schema needed for Caffe's nets)."""
    tokens = _tokens(text)
    pos = 0

    def message(closing: str | None) -> TextMessage:
        nonlocal pos
        fields: TextMessage = {}
        while True:
            if pos >= len(tokens):
                if closing is None:
                    return fields
                raise CaffeFormatError("prototxt: unterminated message")
            token = tokens[pos]
            if token == closing:
                pos += 1
                return fields
            if token in (",", ";"):
                pos += 1
                continue
            key = token
            pos += 1
            if pos < len(tokens) and tokens[pos] == ":":
                pos += 1
            if pos >= len(tokens):
                raise CaffeFormatError(f"prototxt: field {key} has no value")
            opener = tokens[pos]
            value: TextValue
            if opener in ("{", "<"):
                pos += 1
                value = message("}" if opener == "{" else ">")
            else:
                value = _scalar(opener)
                pos += 1
            fields.setdefault(key, []).append(value)

    return message(None)


def read_prototxt(path: Path) -> TextMessage:
    return parse_prototxt(path.read_text(encoding="utf-8"))
