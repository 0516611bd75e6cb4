"""function/preprocess.py: Yahoo's reference preprocessing, step by step."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from skimage import img_as_float
from skimage import io as skio

from function.preprocess import (
    CROP,
    CROP_OFFSET,
    MEAN_BGR,
    RESIZE,
    image_to_tensor,
    reference_tensor,
)
from tests.photos import photo_bytes


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_constants_are_the_reference_ones() -> None:
    assert (RESIZE, CROP, CROP_OFFSET) == (256, 224, 16)
    assert MEAN_BGR.tolist() == [104.0, 117.0, 123.0]


def test_shape_dtype_and_channel_order() -> None:
    tensor = reference_tensor(png(Image.new("RGB", (300, 200), (250, 10, 10))))
    assert tensor.shape == (224, 224, 3) and tensor.dtype == np.float32
    assert tensor.flags["C_CONTIGUOUS"]
    blue, green, red = tensor[112, 112]
    # Pure red in RGB → last channel in BGR, mean subtracted (JPEG round trip: ±a few levels).
    assert abs(red - (250 - 123)) < 6 and abs(blue - (10 - 104)) < 6 and abs(green - (10 - 117)) < 6


def test_whole_image_is_squashed_then_centre_cropped() -> None:
    # A wide image whose right half is white: squashing (not cropping first) keeps both halves,
    # and the crop at offset 16 of 256 leaves the split at the centre column 112 - 16 + 16.
    image = Image.new("RGB", (1000, 100), (0, 0, 0))
    image.paste((255, 255, 255), (500, 0, 1000, 100))
    tensor = reference_tensor(png(image))
    assert tensor[100, 20, 0] < -90 and tensor[100, 200, 0] > 140
    column = int(np.argmax(np.diff(tensor[100, :, 0]) > 60))
    assert abs(column - (128 - CROP_OFFSET)) <= 3


def test_jpeg_round_trip_is_applied() -> None:
    # Noise does not survive JPEG quality 75: without the round trip the tensor would be exact.
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    tensor = reference_tensor(png(noise))
    raw = np.asarray(noise, dtype=np.float32)[16:240, 16:240, ::-1] - MEAN_BGR
    assert np.abs(tensor - raw).mean() > 5


def test_matches_an_independent_transcription_of_the_nsfw_package() -> None:
    """The ``nsfw`` package's path: PIL resize+JPEG, then Caffe's ``load_image`` (skimage,
    floats in [0, 1]), crop, ``raw_scale`` 255, channel swap and mean, written separately."""
    for name in ("astronaut", "rocket", "grace_hopper"):
        data = photo_bytes(name)
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB") if image.mode != "RGB" else image
            resized = rgb.resize((256, 256), resample=Image.BILINEAR)
        jpeg = io.BytesIO()
        resized.save(jpeg, format="JPEG")
        jpeg.seek(0)
        loaded = img_as_float(skio.imread(jpeg)).astype(np.float32)  # caffe.io.load_image
        h_off = w_off = (loaded.shape[0] - 224) // 2
        crop = loaded[h_off : h_off + 224, w_off : w_off + 224, :] * 255.0
        expected = crop[:, :, (2, 1, 0)] - np.array([104, 117, 123], dtype=np.float32)
        np.testing.assert_allclose(reference_tensor(data), expected, atol=1e-3)


def test_image_to_tensor_converts_any_mode() -> None:
    for mode in ("L", "RGBA", "P", "CMYK"):
        tensor = image_to_tensor(Image.new(mode, (64, 64)))
        assert tensor.shape == (224, 224, 3)
        assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
