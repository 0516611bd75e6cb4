"""Encoded bytes → frames a viewer would see (``standard``) or Yahoo's first frame (``reference``).

Only formats on the allowlist are ever handed to a Pillow plugin: the rest of Pillow's
plugins (EPS runs Ghostscript, PSD/FITS/… are rarely exercised) are attack surface we do
not need. Sizes are checked from the header *before* pixels are decoded, and every
exception a plugin can raise on a crafted file becomes a 422, never a 500.

Pillow's truncated-image tolerance is a process-wide switch; ``configure_pillow`` sets it
once at start-up (as the old service's fix did) and this module reports truncation itself.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from function.errors import ImageTooLarge, UndecodableImage, UnsupportedMediaType
from function.preprocess import RESIZE

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

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
)

MAX_JPEG_SCANS = 256
"""Most start-of-scan markers a JPEG may hold. Each scan of a progressive JPEG is one more pass
over every block of the image, however few bytes it takes: 20,000 repeats of a 15-byte scan
(a 371 KB file) cost 4 s of CPU at 12 MP, inside libjpeg where no deadline reaches. Encoders
write 1 (baseline) to ~10 (libjpeg's progression) scans per picture; thumbnails and MPO's
extra pictures add a few more."""

DRAFT_SIDE: int | None = RESIZE
"""Smallest side a JPEG is decoded at in standard mode: libjpeg scales by 1/2, 1/4 or 1/8 in
the DCT (skipping most of the inverse transform and the colour work) while both sides stay at
least this large. ``None`` decodes at full size (the benchmark's fidelity check)."""

MAX_FRAMES_WALKED = 1000
"""Most frames stepped through: an animation's frames are sampled from its first 1000 only
(reaching frame k composites frames 0..k, and 1x1 frames cost the pixel budget nothing:
200,000 of them, 3.4 MB of GIF, took 3.9 s), and a TIFF of more pages is refused (Pillow
walks every page's directory to count them, worse than linearly: 20,000 pages, 2.6 MB,
took 2.7 s)."""

# Everything a Pillow plugin has been seen to raise on hostile input.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    SyntaxError,
    struct.error,
    zlib.error,
    MemoryError,
    OverflowError,
    ZeroDivisionError,
    AttributeError,
    AssertionError,
    RecursionError,
    Image.DecompressionBombWarning,
)

# Formats whose frames decode on their own (pages, not an animation): seeking to one does not
# decode the ones before it.
_INDEPENDENT_FRAMES = ("TIFF", "MPO")

_SRGB = ImageCms.createProfile("sRGB")
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class Decoded:
    """What the decoder made of one file; ``frames`` are RGB images ready to preprocess."""

    format: str
    width: int
    height: int
    frames_total: int
    frame_indices: tuple[int, ...]
    truncated: bool
    frames: list[Image.Image] = field(repr=False, compare=False)


def configure_pillow() -> None:
    """Process-wide Pillow switches, set once at start-up (never at import)."""
    # Decode truncated files as far as they go instead of failing: uploads cut short are
    # common and still worth a score. ``Decoded.truncated`` tells the caller.
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    _warning_filters()


def _warning_filters() -> None:
    # Pillow warns about damage it recovers from (corrupt EXIF, odd TIFF metadata): the image
    # still decodes and is scored, so the warning says nothing the caller needs. Ignored
    # here, it cannot become an exception where warnings are errors (python -W error, tests).
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    # Our own pixel cap is checked first; should a configured cap exceed Pillow's own bomb
    # limit, its warning must still refuse the image rather than go by unnoticed.
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def sniff(data: bytes) -> str | None:
    """The allowed format the bytes claim to be, from their magic number, or None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


def decode(data: bytes, *, mode: str, max_pixels: int, max_frames: int) -> Decoded:
    """Decode ``data`` under the caps. ``mode`` is ``standard`` or ``reference``."""
    claimed = sniff(data)
    if claimed is None:
        raise UnsupportedMediaType(
            "not an image format we accept (JPEG, PNG, GIF, WebP, BMP, TIFF)",
        )
    if claimed == "JPEG":
        # Entropy-coded data stuffs every 0xFF with 0x00, so FF DA occurs only as a real
        # start-of-scan marker or by chance inside metadata: an upper bound, read at memchr
        # speed before a single block is decoded.
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLarge(
                f"the JPEG holds {scans} scans; at most {MAX_JPEG_SCANS} are decoded"
            )
    if claimed == "TIFF" and _tiff_pages(data, MAX_FRAMES_WALKED) > MAX_FRAMES_WALKED:
        raise ImageTooLarge(f"the TIFF has more than {MAX_FRAMES_WALKED} pages")
    try:
        with warnings.catch_warnings():
            _warning_filters()
            image = Image.open(io.BytesIO(data), formats=[claimed])
            with image:
                if mode == "reference":
                    return _decode_reference(image, data, max_pixels)
                return _decode_standard(image, data, max_pixels, max_frames)
    except (ImageTooLarge, UndecodableImage):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("image dimensions exceed the pixel limit") from exc
    except _DECODE_ERRORS as exc:
        raise UndecodableImage(f"the {claimed} file could not be decoded") from exc


def _check_pixels(width: int, height: int, frames: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise UndecodableImage("image has no pixels")
    if width * height * frames > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} pixels x {frames} frame(s) exceeds the limit of {max_pixels} pixels"
        )


def _decode_reference(image: Image.Image, data: bytes, max_pixels: int) -> Decoded:
    # Yahoo's path: first frame, no orientation, alpha dropped by convert('RGB').
    width, height = image.size
    _check_pixels(width, height, 1, max_pixels)
    frames_total = getattr(image, "n_frames", 1)
    image.load()
    truncated = _is_truncated(image, data)
    rgb = image.convert("RGB") if image.mode != "RGB" else image.copy()
    return Decoded(image.format or "", width, height, frames_total, (0,), truncated, [rgb])


def _decode_standard(image: Image.Image, data: bytes, max_pixels: int, max_frames: int) -> Decoded:
    fmt = image.format or ""
    width, height = image.size
    animated = bool(getattr(image, "is_animated", False))
    if not animated:
        if fmt == "JPEG" and DRAFT_SIDE:
            # DCT-domain downscaling (1/2, 1/4, 1/8) straight to >= 256 px: 2-3x faster on
            # large photos, and the pixel cap applies to what is actually decoded.
            image.draft(image.mode, (DRAFT_SIDE, DRAFT_SIDE))
        _check_pixels(*image.size, 1, max_pixels)
        image.load()
        truncated = _is_truncated(image, data)
        frame = _as_viewed(image, apply_exif=True)
        return Decoded(fmt, width, height, 1, (0,), truncated, [frame])

    frames_total = int(getattr(image, "n_frames", 1))
    # Animated formats composite each frame onto the previous ones, so reaching frame k
    # decodes frames 0..k. Spread the sampled frames over the longest prefix that fits the
    # pixel budget and MAX_FRAMES_WALKED (usually the whole animation).
    per_frame = width * height
    _check_pixels(width, height, 1, max_pixels)
    reachable = min(frames_total, max_pixels // per_frame, MAX_FRAMES_WALKED)
    count = min(max_frames, reachable)
    indices = tuple(int(i) for i in np.unique(np.linspace(0, reachable - 1, count).round()))
    # The first frame's size is no promise about the others: TIFF pages each declare their
    # own, and a GIF frame may grow the canvas. So walk the frames that will be decoded and
    # charge each one's own size to the budget *before* its pixels are decoded.
    walk = indices if fmt in _INDEPENDENT_FRAMES else range(indices[-1] + 1)
    spent = 0
    frames: list[Image.Image] = []
    for index in walk:
        image.seek(index)
        spent += image.size[0] * image.size[1]
        if spent > max_pixels:
            raise ImageTooLarge(
                f"the frames decoded up to frame {index} exceed the limit of {max_pixels} pixels"
            )
        if index in indices:
            image.load()
            frames.append(_as_viewed(image, apply_exif=False))
    truncated = _is_truncated(image, data)
    return Decoded(fmt, width, height, frames_total, indices, truncated, frames)


def _tiff_pages(data: bytes, limit: int) -> int:
    """Pages in a classic TIFF's chain of directories, counted up to ``limit + 1`` without
    parsing any of them (a chain that loops or runs off the file ends the count)."""
    order = "<" if data[:2] == b"II" else ">"
    seen: set[int] = set()
    offset = struct.unpack_from(order + "I", data, 4)[0] if len(data) >= 8 else 0
    while offset and offset not in seen and len(seen) <= limit and offset + 2 <= len(data):
        seen.add(offset)
        entries = struct.unpack_from(order + "H", data, offset)[0]
        next_at = offset + 2 + 12 * entries
        if next_at + 4 > len(data):
            break
        offset = struct.unpack_from(order + "I", data, next_at)[0]
    return len(seen)


def _as_viewed(image: Image.Image, *, apply_exif: bool) -> Image.Image:
    """What a browser shows: sRGB colours, EXIF orientation applied, alpha over white.

    Always returns a new image (the decoder's is closed, or moved to the next frame, after
    this), but copies pixels only once: every step below already returns a new image.
    """
    original = image
    icc = image.info.get("icc_profile")
    if icc and image.mode in ("RGB", "RGBA", "CMYK", "L", "LA"):
        image = _to_srgb(image, icc)
    if apply_exif:  # animation frames carry no orientation of their own
        try:
            image = ImageOps.exif_transpose(image)
        except _DECODE_ERRORS:
            pass  # a broken EXIF block: show the pixels as stored, as browsers do
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image.copy() if image is original else image


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


def _is_truncated(image: Image.Image, data: bytes) -> bool:
    """Did the file end before its image data did? (Pillow decodes it anyway.)"""
    fmt = image.format
    if fmt == "JPEG":
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
