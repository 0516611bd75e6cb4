"""A decoded frame → the small RGB picture a viewer would see, without full-size copies.

The model sees the whole image squashed to 256×256, so nothing needs more than about twice
that. A frame is shrunk first, band by band (each band a few MiB, box-averaged down to
``SHRINK_TO`` px or more per side), and only the small result gets the colour (ICC), EXIF
orientation and white-background work. Every full-size step of the straightforward path
(``convert('RGBA')``, a white canvas, ``alpha_composite``, ``convert('RGB')``) was one more
full-size copy: about 23 MiB per megapixel for an RGBA PNG (docs/performance.md, "Memory").

Averaging alpha-weighted (premultiplied) colour, as ``Image.reduce`` does for RGBA and LA,
then compositing onto white equals compositing first and averaging after: compositing onto
a constant background is linear in premultiplied colour.
"""

from __future__ import annotations

import io

from PIL import Image, ImageCms

SHRINK_TO = 512
"""Shortest side (per axis) frames are box-reduced to before colour work: 2× the model's
256×256 resize, whose bilinear filter then still averages over every source pixel."""

BAND_BYTES = 4 << 20
"""Rows handled at once: enough per band to amortise the call overhead, small beside a frame."""

# Modes Image.reduce takes as they are (it premultiplies RGBA and LA itself).
_REDUCIBLE = ("L", "LA", "RGB", "RGBA", "CMYK")
_ICC_MODES = ("RGB", "RGBA", "CMYK", "L", "LA")
_SRGB = ImageCms.createProfile("sRGB")
_WHITE = (255, 255, 255)

# EXIF orientation → the transposition that shows the picture upright (as ImageOps does).
_ORIENTATION = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


def factors(width: int, height: int) -> tuple[int, int]:
    """Box-reduction factors per axis that keep each side >= ``SHRINK_TO``."""
    return max(1, width // SHRINK_TO), max(1, height // SHRINK_TO)


def shrink(image: Image.Image) -> Image.Image:
    """A new, reduced copy of the loaded ``image``, in a mode ``_REDUCIBLE`` (or as loaded for
    small images), built band by band so that no full-size copy exists at any time."""
    width, height = image.size
    fx, fy = factors(width, height)
    mode = image.mode if image.mode in _REDUCIBLE else ("RGBA" if has_alpha(image) else "RGB")
    if fx == 1 and fy == 1 and mode == image.mode:
        return image.copy()
    bytes_per_row = width * 4
    rows = max(fy, (BAND_BYTES // bytes_per_row) // fy * fy)
    out = Image.new(mode, (width // fx, height // fy))
    for top in range(0, out.height * fy, rows):
        bottom = min(top + rows, out.height * fy)
        band = image.crop((0, top, out.width * fx, bottom))
        if band.mode != mode:
            band = band.convert(mode)
        out.paste(band.reduce((fx, fy)) if (fx, fy) != (1, 1) else band, (0, top // fy))
    return out


def as_viewed(image: Image.Image, *, icc: bytes | None, orientation: int | None) -> Image.Image:
    """What a browser shows, from a small (already shrunk) frame: sRGB colours, EXIF
    orientation applied, alpha over white. ``image`` may be modified or returned."""
    if icc and image.mode in _ICC_MODES:
        image = _to_srgb(image, icc)
    for method in _ORIENTATION.get(orientation or 1, ()):
        image = image.transpose(method)
    if has_alpha(image):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out_mode = "RGBA" if image.mode in ("RGBA", "LA") else "RGB"
        if image.mode == "LA":
            image = image.convert("RGBA")
        converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode=out_mode)
        return converted if converted is not None else image
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image  # an unusable profile: fall back to the raw values, as browsers do
