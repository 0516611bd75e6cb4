"""Encoded bytes → frames a viewer would see (``standard``) or Yahoo's first frame (``reference``).

Only formats on the allowlist are ever handed to a Pillow plugin: the rest of Pillow's
plugins (EPS runs Ghostscript, PSD/FITS/… are rarely exercised) are attack surface we do
not need. Sizes are checked from the header *before* pixels are decoded, and every
exception a plugin can raise on a crafted file becomes a 422, never a 500.

Memory: each decode first reserves its full-size decoded bytes from the pod's
``DecodeBudget`` (waiting its turn if others hold it; ``walk.py`` walks the frames), and frames
are shrunk band by band (``frames.py``) so that the decoded image is the only full-size buffer
it ever holds.

Pillow's truncated-image tolerance and warning filters are process-wide; ``configure_pillow``
sets them once at start-up and this module reports truncation itself.
"""

from __future__ import annotations

import io
import logging
import time
import warnings

from PIL import Image, ImageFile

from function.budget import DecodeBudget
from function.errors import ImageTooLarge, UndecodableImage, UnsupportedMediaType
from function.formats import jpeg_scans, sniff, tiff_pages
from function.walk import DECODE_ERRORS, MAX_FRAMES_WALKED, Decoded, DecodeJob, frame_cost

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_FRAMES_WALKED",
    "MAX_JPEG_SCANS",
    "Decoded",
    "configure_pillow",
    "decode",
    "frame_cost",
    "sniff",
]

ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")

MAX_JPEG_SCANS = 256
"""Most start-of-scan markers a JPEG may hold. Each scan of a progressive JPEG is one more pass
over every block of the image, however few bytes it takes: 20,000 repeats of a 15-byte scan
(a 371 KB file) cost 4 s of CPU at 12 MP, inside libjpeg where no deadline reaches. Encoders
write 1 (baseline) to ~10 (libjpeg's progression) scans per picture; thumbnails and MPO's
extra pictures add a few more."""


class _Downgrade(logging.Filter):
    """Pillow logs what it finds wrong in a caller's file at ERROR (e.g. a broken TIFF tag):
    a fault of the input, not of the service, so it is logged at WARNING at most."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("PIL") and record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_pillow() -> None:
    """Process-wide Pillow switches, set once at start-up (never at import)."""
    # Decode truncated files as far as they go instead of failing: uploads cut short are
    # common and still worth a score. ``Decoded.truncated`` tells the caller.
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    # Pillow warns about damage it recovers from (corrupt EXIF, odd TIFF metadata): the image
    # still decodes and is scored, so the warning says nothing the caller needs. Ignored
    # here, it cannot become an exception where warnings are errors (python -W error, tests).
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    # Our own pixel cap is checked first; should a configured cap exceed Pillow's own bomb
    # limit, its warning must still refuse the image rather than go by unnoticed.
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _Downgrade) for f in handler.filters):
            handler.addFilter(_Downgrade())


def decode(
    data: bytes,
    *,
    mode: str,
    max_pixels: int,
    max_frames: int,
    budget: DecodeBudget | None = None,
    deadline: float | None = None,
) -> Decoded:
    """Decode ``data`` under the caps. ``mode`` is ``standard`` or ``reference``.

    With a ``budget``, the decode first reserves its memory there, waiting until
    ``deadline`` (``time.monotonic()`` time) at most.
    """
    claimed = sniff(data)
    if claimed is None:
        raise UnsupportedMediaType(
            "not an image format we accept (JPEG, PNG, GIF, WebP, BMP, TIFF)",
        )
    if claimed == "JPEG":
        # Counted before a single block is decoded: an upper bound on the passes libjpeg makes.
        scans = jpeg_scans(data)
        if scans > MAX_JPEG_SCANS:
            raise ImageTooLarge(
                f"the JPEG holds {scans} scans; at most {MAX_JPEG_SCANS} are decoded"
            )
    if claimed == "TIFF" and tiff_pages(data, MAX_FRAMES_WALKED) > MAX_FRAMES_WALKED:
        raise ImageTooLarge(f"the TIFF has more than {MAX_FRAMES_WALKED} pages")
    job = DecodeJob(
        data, max_pixels, budget, deadline if deadline is not None else time.monotonic() + 3600
    )
    try:
        image = Image.open(io.BytesIO(data), formats=[claimed])
        with image:
            if mode == "reference":
                return job.reference(image)
            return job.standard(image, max_frames)
    except (ImageTooLarge, UndecodableImage):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge("image dimensions exceed the pixel limit") from exc
    except DECODE_ERRORS as exc:
        raise UndecodableImage(f"the {claimed} file could not be decoded") from exc
    finally:
        job.release()
