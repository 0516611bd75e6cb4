"""One decode's walk through a file's frames, holding its share of the decode budget.

``decode.decode`` checks the bytes and opens the file; a ``DecodeJob`` then charges each frame's
pixels to the pixel cap and its memory to the pod's ``DecodeBudget`` *before* decoding it, and
hands each decoded frame to ``frames.py`` to be shrunk and shown as a viewer would.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from function.budget import DecodeBudget
from function.errors import ImageTooLarge, UndecodableImage
from function.formats import gif_frames, is_truncated
from function.frames import BAND_BYTES, as_viewed, shrink
from function.preprocess import RESIZE

DRAFT_SIDE: int | None = RESIZE
"""Smallest side a JPEG is decoded at in standard mode: libjpeg scales by 1/2, 1/4 or 1/8 in
the DCT while both sides stay at least this large. ``None`` decodes at full size (the
benchmark's fidelity check); larger sides cost as much and move scores no less."""

MAX_FRAMES_WALKED = 1000
"""Most frames stepped through: an animation's frames are sampled from its first 1000 only
(reaching frame k composites frames 0..k, and 1x1 frames cost the pixel budget nothing:
200,000 of them, 3.4 MB of GIF, took 3.9 s), and a TIFF of more pages is refused (Pillow
walks every page's directory to count them, worse than linearly: 20,000 pages, 2.6 MB,
took 2.7 s). A GIF's frames are counted up to this many plus one, no further."""

# Everything a Pillow plugin has been seen to raise on hostile input.
DECODE_ERRORS = (
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

_BYTES_PER_PIXEL = {"WEBP": (17, 21)}
"""Peak bytes per decoded pixel (still, animated) where they are not (5, 15): measured 4.7 for
PNG, TIFF and BMP, 13-14 for APNG and GIF animations, 16.7 and 20.5 for WebP."""

_FIXED_COST = 4 * BAND_BYTES
"""Bytes a decode holds besides its frame: bands in flight, the shrunk frames, plugin state."""


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


def check_pixels(width: int, height: int, frames: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise UndecodableImage("image has no pixels")
    if width * height * frames > max_pixels:
        raise ImageTooLarge(
            f"{width}x{height} pixels x {frames} frame(s) exceeds the limit of {max_pixels} pixels"
        )


def frame_cost(fmt: str, width: int, height: int, *, animated: bool) -> int:
    """Bytes held while decoding one frame of ``width``x``height``: Pillow's frame (4 bytes a
    pixel; 1 for palette and grey, charged as 4 all the same) and the plugin's buffers; WebP
    decodes into canvases of its own (one per animation too) and hands Pillow a copy. Other
    animations hold their previous and disposal canvases besides: charged at 3 frames.
    Measured in docs/performance.md, "Memory"."""
    still, animation = _BYTES_PER_PIXEL.get(fmt, (5, 15))
    per_pixel = animation if animated else still
    return width * height * per_pixel + _FIXED_COST


def _frame_count(image: Image.Image, data: bytes) -> int:
    if image.format == "GIF":
        return gif_frames(data, MAX_FRAMES_WALKED)
    return int(getattr(image, "n_frames", 1))


class DecodeJob:
    """One decode's state: its caps and the part of the budget it holds."""

    def __init__(
        self, data: bytes, max_pixels: int, budget: DecodeBudget | None, deadline: float
    ) -> None:
        self.data = data
        self.max_pixels = max_pixels
        self.budget = budget
        self.deadline = deadline
        self.held = 0

    def hold(self, cost: int) -> None:
        """Hold at least ``cost`` bytes of the budget (more is reserved only as needed)."""
        if self.budget is not None and cost > self.held:
            self.budget.acquire(cost - self.held, self.deadline)
            self.held = cost

    def release(self) -> None:
        if self.budget is not None and self.held:
            self.budget.release(self.held)
            self.held = 0

    def reference(self, image: Image.Image) -> Decoded:
        # Yahoo's path: first frame, no orientation, alpha dropped by convert('RGB').
        width, height = image.size
        check_pixels(width, height, 1, self.max_pixels)
        # Full-size RGB copy besides the decoded frame: charged twice.
        self.hold(2 * frame_cost(image.format or "", width, height, animated=False))
        frames_total = _frame_count(image, self.data)
        image.load()
        truncated = is_truncated(image, self.data)
        rgb = image.convert("RGB") if image.mode != "RGB" else image.copy()
        return Decoded(image.format or "", width, height, frames_total, (0,), truncated, [rgb])

    def standard(self, image: Image.Image, max_frames: int) -> Decoded:
        fmt = image.format or ""
        width, height = image.size
        animated = bool(getattr(image, "is_animated", False))
        if not animated:
            if fmt == "JPEG" and DRAFT_SIDE:
                # DCT-domain downscaling (1/2, 1/4, 1/8) straight to >= 256 px: 2-3x faster
                # on large photos, and the pixel cap applies to what is actually decoded.
                image.draft(image.mode, (DRAFT_SIDE, DRAFT_SIDE))
            check_pixels(*image.size, 1, self.max_pixels)
            self.hold(frame_cost(fmt, *image.size, animated=False))
            image.load()
            frame = self._viewed(image, apply_exif=True)
            return Decoded(fmt, width, height, 1, (0,), is_truncated(image, self.data), [frame])
        return self._animation(image, fmt, max_frames)

    def _animation(self, image: Image.Image, fmt: str, max_frames: int) -> Decoded:
        width, height = image.size
        frames_total = _frame_count(image, self.data)
        # Animated formats composite each frame onto the previous ones, so reaching frame k
        # decodes frames 0..k. Spread the sampled frames over the longest prefix that fits
        # the pixel budget and MAX_FRAMES_WALKED (usually the whole animation).
        check_pixels(width, height, 1, self.max_pixels)
        reachable = min(frames_total, self.max_pixels // (width * height), MAX_FRAMES_WALKED)
        count = min(max_frames, reachable)
        indices = tuple(int(i) for i in np.unique(np.linspace(0, reachable - 1, count).round()))
        # The first frame's size is no promise about the others: TIFF pages each declare
        # their own, and a GIF frame may grow the canvas. So walk the frames that will be
        # decoded and charge each one's own size to the budgets *before* it is decoded.
        independent = fmt in _INDEPENDENT_FRAMES
        walk = indices if independent else range(indices[-1] + 1)
        spent = 0
        frames: list[Image.Image] = []
        decoded: list[int] = []
        broken = False
        for index in walk:
            try:
                image.seek(index)
            except DECODE_ERRORS:
                if not frames:
                    raise
                broken = True  # a later frame is damaged: score the ones before it
                break
            spent += image.size[0] * image.size[1]
            if spent > self.max_pixels:
                raise ImageTooLarge(
                    f"the frames decoded up to frame {index} exceed the limit of "
                    f"{self.max_pixels} pixels"
                )
            self.hold(frame_cost(fmt, *image.size, animated=not independent))
            if index in indices:
                try:
                    image.load()
                    frames.append(self._viewed(image, apply_exif=False))
                except DECODE_ERRORS:
                    if not frames:
                        raise
                    broken = True
                    break
                decoded.append(index)
        truncated = broken or is_truncated(image, self.data)
        return Decoded(fmt, width, height, frames_total, tuple(decoded), truncated, frames)

    def _viewed(self, image: Image.Image, *, apply_exif: bool) -> Image.Image:
        orientation = None
        if apply_exif:  # animation frames carry no orientation of their own
            try:
                orientation = image.getexif().get(0x0112)
            except DECODE_ERRORS:
                pass  # a broken EXIF block: show the pixels as stored, as browsers do
        icc = image.info.get("icc_profile")
        return as_viewed(
            shrink(image),
            icc=icc if isinstance(icc, bytes) else None,
            orientation=orientation if isinstance(orientation, int) else None,
        )
