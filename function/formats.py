"""What the bytes say before any plugin parses them: format, page and frame counts, truncation.

Pure functions over the encoded bytes, each bounded by a count it stops at, so that a file
built to make counting expensive costs no more than that count.
"""

from __future__ import annotations

import struct

import numpy as np
from PIL import Image

# Magic numbers of the allowed formats: a file that starts like one of these but does not
# decode is a broken image (422); anything else is a format we do not take (415).
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
)


def sniff(data: bytes) -> str | None:
    """The allowed format the bytes claim to be, from their magic number, or None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


def jpeg_scans(data: bytes) -> int:
    """Start-of-scan markers (FF DA) in a JPEG, an upper bound on its scans.

    Entropy-coded data stuffs every 0xFF with 0x00, so FF DA occurs only as a real marker or by
    chance inside metadata. Every 0xDA is found in one vectorised pass and the byte before each
    is checked, which beats ``bytes.count`` on camera JPEGs, whose entropy-coded data is full of
    0xFF (docs/performance.md)."""
    octets = np.frombuffer(data, np.uint8)
    before_da = np.flatnonzero(octets[1:] == 0xDA)  # index i: data[i + 1] is 0xDA
    return int(np.count_nonzero(octets[before_da] == 0xFF))


def tiff_pages(data: bytes, limit: int) -> int:
    """Pages in a TIFF's (or BigTIFF's) chain of directories, counted up to ``limit + 1``
    without parsing any of them (a chain that loops or runs off the file ends the count)."""
    if len(data) < 8:
        return 0
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    # Classic: 4-byte offsets, 2-byte entry counts, 12-byte entries. BigTIFF: 8, 8 and 20.
    offset_fmt, count_fmt, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    offset_size, count_size = struct.calcsize(offset_fmt), struct.calcsize(count_fmt)
    first_at = 8 if big else 4
    if len(data) < first_at + offset_size:
        return 0
    seen: set[int] = set()
    offset = struct.unpack_from(order + offset_fmt, data, first_at)[0]
    while offset and offset not in seen and len(seen) <= limit:
        if offset + count_size > len(data):
            break
        seen.add(offset)
        entries = struct.unpack_from(order + count_fmt, data, offset)[0]
        next_at = offset + count_size + entry_size * entries
        if next_at + offset_size > len(data):
            break
        offset = struct.unpack_from(order + offset_fmt, data, next_at)[0]
    return len(seen)


def gif_frames(data: bytes, limit: int) -> int:
    """Image descriptors in a GIF, counted up to ``limit + 1`` by skipping over sub-blocks
    (Pillow's ``n_frames`` walks every frame however many there are)."""
    if len(data) < 13:
        return 0
    flags = data[10]
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    while at < len(data) and frames <= limit:
        block = data[at]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            at = _skip_sub_blocks(data, at + 2)
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW data
            if at + 10 > len(data):
                break
            local = data[at + 9]
            at += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            at = _skip_sub_blocks(data, at + 1)  # after the LZW minimum code size
            frames += 1
        else:
            break  # not a GIF block: what came before is all Pillow would read either
    return max(frames, 1)


def _skip_sub_blocks(data: bytes, at: int) -> int:
    while at < len(data):
        size = data[at]
        at += 1 + size
        if size == 0:
            return at
    return len(data)


def is_truncated(image: Image.Image, data: bytes) -> bool:
    """Did the file end before its image data did? (Pillow decodes it anyway.)"""
    fmt = image.format
    if fmt == "JPEG" or fmt == "MPO":
        # Pillow's JPEG reader appends a synthetic end-of-image marker on premature EOF.
        return bool(getattr(image, "_ended", False))
    if fmt == "PNG":
        return b"IEND" not in data[-64:]
    if fmt == "GIF":
        return not data.rstrip(b"\x00").endswith(b";")
    if fmt == "WEBP":
        declared = struct.unpack_from("<I", data, 4)[0] + 8
        return len(data) < declared
    if fmt == "BMP":
        declared = struct.unpack_from("<I", data, 2)[0]
        return 0 < len(data) < declared
    if fmt == "TIFF":
        # Strips (or tiles) that point past the end of the file were cut off.
        tags = getattr(image, "tag_v2", {})
        offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)
        if isinstance(offsets, int):
            offsets, counts = (offsets,), (counts,)
        if offsets and counts:
            return max(o + c for o, c in zip(offsets, counts, strict=False)) > len(data)
    return False
