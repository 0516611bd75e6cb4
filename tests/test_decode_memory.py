"""Large frames are shrunk band by band before colour and alpha work, and scores stay put.

The reference here is the straightforward full-size path (convert to RGBA, composite onto a
full-size white canvas, convert to RGB, then the model's own 256×256 resize), written out in
the test: the scores of the shrunk path may differ from it by rounding only.
"""

from __future__ import annotations

import io
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from function.decode import configure_pillow, decode
from function.frames import SHRINK_TO, shrink
from function.model import Model
from function.preprocess import image_to_tensor
from tests.photos import COLOUR_PHOTOS, PHOTOS

CAPS = {"max_pixels": 50_000_000, "max_frames": 8}
SIZE = (1600, 1200)  # reduced 3× across and 2× down (// 512)


@pytest.fixture(autouse=True, scope="module")
def pillow() -> None:
    configure_pillow()


@pytest.fixture(scope="module")
def model(built_model: Path) -> Model:
    loaded = Model(built_model, "onnxruntime", 2)
    loaded.load()
    return loaded


def rgba_png(name: str) -> bytes:
    """The photo upscaled, with an alpha ramp across it (opaque left, clear right)."""
    with Image.open(PHOTOS[name]) as image:
        rgb = image.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC)
    ramp = np.tile(np.linspace(255, 0, SIZE[0]).astype(np.uint8), (SIZE[1], 1))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(ramp, "L"))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def full_size_view(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def test_rgba_pngs_score_as_the_full_size_path_does(model: Model) -> None:
    names = [name for name in COLOUR_PHOTOS if name in PHOTOS]
    assert len(names) >= 8
    shrunk, full = [], []
    for name in names:
        data = rgba_png(name)
        decoded = decode(data, mode="standard", **CAPS)
        (frame,) = decoded.frames
        assert (decoded.width, decoded.height) == SIZE
        assert frame.size == (SIZE[0] // 3, SIZE[1] // 2) and frame.mode == "RGB"
        shrunk.append(image_to_tensor(frame))
        full.append(image_to_tensor(full_size_view(data)))
    scores = model.predict(np.stack(shrunk + full))
    moved = np.abs(scores[: len(names)] - scores[len(names) :])
    assert moved.max() <= 0.03, dict(zip(names, moved.round(4).tolist(), strict=True))
    assert statistics.median(moved.tolist()) <= 0.002


def test_shrink_keeps_at_least_twice_the_model_size_per_side() -> None:
    for size in ((5000, 600), (600, 5000), (1100, 1100), (513, 4000)):
        small = shrink(Image.new("RGBA", size, (10, 20, 30, 255)))
        assert min(small.size) >= min(SHRINK_TO, *size)
        assert all(s >= min(SHRINK_TO, o) for s, o in zip(small.size, size, strict=True))
        assert small.getpixel((0, 0)) == (10, 20, 30, 255)


def test_palette_transparency_over_white_after_shrinking() -> None:
    image = Image.new("P", (1600, 1200), 1)
    image.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    image.paste(0, (0, 0, 800, 1200))  # left half index 0, declared transparent
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    (frame,) = decode(buffer.getvalue(), mode="standard", **CAPS).frames
    assert frame.size == (1600 // 3, 1200 // 2)
    assert frame.getpixel((10, 10)) == (255, 255, 255)
    assert frame.getpixel((frame.width - 10, 10)) == (200, 0, 0)


def test_sixteen_bit_greyscale_png_decodes() -> None:
    ramp = np.tile(np.linspace(0, 65535, 1200).astype(np.uint16), (1100, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    (frame,) = decode(buffer.getvalue(), mode="standard", **CAPS).frames
    assert frame.mode == "RGB" and frame.size == (600, 550)


def test_orientation_is_applied_after_shrinking() -> None:
    image = Image.new("RGB", (1600, 800), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 800, 800))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90° clockwise
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    (frame,) = decode(buffer.getvalue(), mode="standard", **CAPS).frames
    assert frame.size == (800, 1600 // 3)  # shrunk 3× across, then turned upright
    assert frame.getpixel((400, 10)) == (0, 0, 255)  # the left half is now on top
    assert frame.getpixel((400, frame.height - 10)) == (255, 0, 0)
