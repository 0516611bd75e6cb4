"""Real colour photos from installed wheels, for any test that needs photo-like input.

``PHOTOS`` maps a short name to a file shipped by scikit-image or matplotlib (14 photos:
11 colour, 3 greyscale textures, one RGBA). ``photo_jpeg`` re-encodes/resizes with Pillow to
make upload-like JPEGs of a given size (e.g. 1920×1080 or 12 MP).
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from PIL import Image

from convert.photos import find_photos

PHOTOS: dict[str, Path] = find_photos()

COLOUR_PHOTOS: tuple[str, ...] = tuple(
    name for name in PHOTOS if name not in ("brick", "gravel", "grass")
)


@cache
def photo_bytes(name: str) -> bytes:
    """The photo's file exactly as shipped (PNG or JPEG)."""
    return PHOTOS[name].read_bytes()


@cache
def photo_jpeg(name: str, size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    """The photo as an RGB JPEG, optionally resized to ``size`` = (width, height)."""
    with Image.open(PHOTOS[name]) as image:
        rgb = image.convert("RGB")
    if size is not None and rgb.size != size:
        rgb = rgb.resize(size, resample=Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
