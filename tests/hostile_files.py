"""Hostile files, made in code: every accepted format intact or broken, headers that declare
huge sizes, animations and page chains built to cost work, formats the service refuses.

``tests/test_hostile_inputs.py`` holds the table of what each must be answered with; the
builders live here so the table reads as a table.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from PIL import Image

from tests.photos import PHOTOS


def photo(size: tuple[int, int] = (120, 80)) -> Image.Image:
    with Image.open(PHOTOS["chelsea"]) as image:
        return image.convert("RGB").resize(size)


def encoded(fmt: str, image: Image.Image | None = None, **options: Any) -> bytes:
    buffer = io.BytesIO()
    (image or photo()).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRCs) declaring ``width``x``height``, tiny data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def gif_declaring(width: int, height: int) -> bytes:
    """The classic 1x1 GIF, with a logical screen of ``width``x``height``."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + b","
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00;"
    )


def bmp_declaring(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\0" * 64


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 segment now claims ``width``x``height``."""
    data = bytearray(encoded("JPEG"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def tiff_declaring(width: int, height: int) -> bytes:
    entries = [
        struct.pack("<HHII", 256, 4, 1, width),
        struct.pack("<HHII", 257, 4, 1, height),
        struct.pack("<HHIHH", 258, 3, 1, 8, 0),
        struct.pack("<HHIHH", 259, 3, 1, 1, 0),
        struct.pack("<HHIHH", 262, 3, 1, 1, 0),
        struct.pack("<HHII", 273, 4, 1, 8 + 2 + 12 * 8 + 4),
        struct.pack("<HHII", 278, 4, 1, height),
        struct.pack("<HHII", 279, 4, 1, 64),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 64


def webp_declaring(width: int, height: int) -> bytes:
    """An extended (VP8X) WebP whose canvas is ``width``x``height``, image data tiny."""
    small = encoded("WEBP", photo((16, 16)), lossless=True)
    bitstream = small[12:]  # the VP8L chunk
    canvas = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + canvas + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + bitstream
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_blocks(data: bytes) -> tuple[bytes, list[bytes]]:
    """Split a GIF into its head (header, screen, global palette) and its blocks."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    head, blocks = data[:pos], []
    while data[pos] != 0x3B:
        start = pos
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            pos += 2
        else:  # image: descriptor, local palette, LZW code size, then sub-blocks
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0) + 1
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
        blocks.append(data[start:pos])
    return head, blocks


def gif_growing_canvas(width: int, height: int) -> bytes:
    """Two frames: 100x100, then one whose descriptor grows the canvas to ``width``x``height``.

    The second frame reuses the first one's LZW data: it is never meant to be decoded.
    """
    small = Image.new("P", (100, 100), 1)
    small.putpalette([0, 0, 0, 255, 255, 255])
    head, blocks = gif_blocks(encoded("GIF", small))
    image = next(b for b in blocks if b[0] == 0x2C)
    grown = image[:5] + struct.pack("<HH", width, height) + image[9:]
    return head + b"".join(blocks) + grown + b";"


def gif_frames(count: int, size: tuple[int, int]) -> bytes:
    """``count`` distinct frames of ``size`` (black/white alternating: none merged)."""
    frames = []
    for i in range(count):
        frame = Image.new("P", size, i % 2)
        frame.putpalette([0, 0, 0, 255, 255, 255])
        frames.append(frame)
    return encoded("GIF", frames[0], save_all=True, append_images=frames[1:], duration=40)


def tiff_with_huge_second_page() -> bytes:
    first = Image.new("L", (100, 100), 128)
    huge = Image.new("1", (7100, 7100), 0)  # 50.4 MP, a few KB deflated
    return encoded("TIFF", first, save_all=True, append_images=[huge], compression="tiff_deflate")


def jpeg_with_scans(total: int, size: tuple[int, int] = (640, 480)) -> bytes:
    """A progressive JPEG of one flat colour whose smallest scan is repeated until the file
    holds ``total`` scans: a few bytes per scan, one more pass over every block to decode."""
    data = encoded("JPEG", Image.new("RGB", size, (120, 130, 140)), progressive=True)
    scans: list[tuple[int, int]] = []  # each SOS segment with its entropy-coded data
    i = 2
    while data[i + 1] != 0xD9:
        end = i + 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
        if data[i + 1] == 0xDA:
            while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 1
            scans.append((i, end))
        i = end
    start, end = min(scans[1:], key=lambda scan: scan[1] - scan[0])
    return data[: scans[-1][1]] + data[start:end] * (total - len(scans)) + b"\xff\xd9"


def gif_tiny_frames(count: int) -> bytes:
    """``count`` frames of 1x1: nothing for the pixel budget, a step each to walk through."""
    buffer = io.BytesIO()
    Image.new("P", (1, 1), 0).save(buffer, "GIF")
    gif = buffer.getvalue()
    start = gif.index(b",")  # the image descriptor: the frame runs to just before ";"
    return gif[:start] + gif[start:-1] * count + b";"


def tiff_pages(count: int) -> bytes:
    """A little-endian TIFF of ``count`` 1x1 grey pages, all pointing at one pixel."""
    tags = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (259, 3, 1), (262, 3, 1)]
    ifd_size = 2 + 12 * (len(tags) + 3) + 4
    pixel_at = 8 + count * ifd_size
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for page in range(count):
        entries = [*tags, (273, 4, pixel_at), (278, 3, 1), (279, 4, 1)]
        out += struct.pack("<H", len(entries))
        for tag, kind, value in entries:
            out += struct.pack("<HHII", tag, kind, 1, value)
        out += struct.pack("<I", 8 + (page + 1) * ifd_size if page + 1 < count else 0)
    return bytes(out + b"\x80")


def png_worst_case(mode: str, size: tuple[int, int]) -> bytes:
    """A flat ``mode`` PNG of ``size`` (a few hundred KB even near the pixel cap); "P" has
    its index 0 declared transparent, over a half of the picture."""
    image = Image.new(mode, size, (200, 30, 30, 128) if mode == "RGBA" else 1)
    if mode == "P":
        image.putpalette([0, 0, 0, 200, 30, 30])
        image.paste(0, (0, 0, size[0] // 2, size[1]))
        return encoded("PNG", image, transparency=0)
    return encoded("PNG", image)


def png_16bit_rgba(size: tuple[int, int]) -> bytes:
    """16 bits per channel, RGBA (colour type 6): Pillow reads it, but cannot write one."""
    width, height = size
    row = b"\0" + b"\x80\x00\x20\x00\x20\x00\xff\xff" * width
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(row * height, 1))
        + png_chunk(b"IEND", b"")
    )


def huge_jpeg() -> bytes:
    """9000x7000 = 63 MP, over the 50 MP cap; draft mode decodes it at 1/8 scale."""
    with Image.open(PHOTOS["astronaut"]) as image:
        big = image.convert("RGB").resize((9000, 7000), Image.Resampling.NEAREST)
    return encoded("JPEG", big, quality=75)


FORMATS = {
    "JPEG": ("image/jpeg", {}),
    "PNG": ("image/png", {}),
    "GIF": ("image/gif", {}),
    "WEBP": ("image/webp", {"quality": 80}),
    "BMP": ("image/bmp", {}),
    "TIFF": ("image/tiff", {}),
}
# Pillow decodes a file cut in half as far as it goes (a common upload fault, still worth a
# score) for every format but WebP, whose decoder needs the whole bitstream.
HALF_DECODES = {"JPEG", "PNG", "GIF", "BMP", "TIFF"}

NOT_OURS = {
    "plain-text": b"hello, this is not an image\n",
    "html": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9e9" '
    b'height="9e9"><script>alert(1)</script></svg>',
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
    b"(%pipe%id) (w) file\nshowpage\n%%EOF\n",
    "eps-dos-binary": b"\xc5\xd0\xd3\xc6"
    + struct.pack("<IIIIIIH", 30, 60, 0, 0, 0, 0, 0xFFFF)
    + b"%!PS-Adobe-3.0 EPSF-3.0\n" * 3,
    "pdf": b"%PDF-1.7\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n",
    "psd": b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 3, 30000, 30000, 8, 3),
    "fits": b"SIMPLE  =                    T".ljust(80)
    + b"BITPIX  =                    8".ljust(80)
    + b"NAXIS   =                    2".ljust(80)
    + b"END".ljust(80),
    "jpeg2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 32,
    "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 32,
    "qoi": b"qoif" + struct.pack(">IIBB", 30000, 30000, 4, 0) + b"\x00" * 16,
    "xbm": b"#define x_width 9000\n#define x_height 9000\nstatic char x_bits[] = {0x00};\n",
    "dds": b"DDS " + b"\x00" * 124,
    "zip": b"PK\x03\x04" + b"\x00" * 40,
}
PILLOW_ONLY = {"ico": "ICO", "ppm": "PPM", "pcx": "PCX", "tga": "TGA", "sgi": "SGI"}
