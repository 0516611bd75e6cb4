"""The benchmark's upload-like corpus: deterministic files that are what each class says.

Small sizes stand in for the benchmark's (the same code path makes 12 MP files); nothing here
is timed.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from PIL import Image, JpegImagePlugin

from bench.corpus import BY_NAME, CLASSES, EXIF_ORIENTATION, ImageClass, encode, make
from function.decode import decode


def small(name: str, size: tuple[int, int] = (320, 240)) -> ImageClass:
    return dataclasses.replace(BY_NAME[name], size=size)


def test_every_class_is_named_once_and_makes_its_format() -> None:
    assert len(BY_NAME) == len(CLASSES)
    for image_class in CLASSES:
        data = encode("coffee", dataclasses.replace(image_class, size=(160, 120)))
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == ("PNG" if image_class.kind == "png" else "JPEG")


def test_the_same_inputs_give_the_same_bytes() -> None:
    image_class = small("camera-1080p")
    assert encode("astronaut", image_class) == encode("astronaut", image_class)
    assert encode("astronaut", image_class) != encode("coffee", image_class)


def test_camera_noise_raises_the_bit_rate_over_a_smooth_photo() -> None:
    size = (800, 600)
    smooth = encode("astronaut", dataclasses.replace(BY_NAME["smooth-1080p"], size=size))
    camera = encode("astronaut", small("camera-1080p", size))
    bpp = 8 * len(camera) / (size[0] * size[1])
    assert len(camera) > 1.3 * len(smooth)
    assert 1.5 < bpp < 5


@pytest.mark.parametrize(
    ("name", "subsampling", "progressive"),
    [("camera-1080p", 2, False), ("camera-12MP-444-prog", 0, True)],
)
def test_chroma_and_progression_are_as_declared(
    name: str, subsampling: int, progressive: bool
) -> None:
    with Image.open(io.BytesIO(encode("coffee", small(name)))) as image:
        assert JpegImagePlugin.get_sampling(image) == subsampling
        assert bool(image.info.get("progressive")) == progressive


def test_exif_rotated_photo_is_stored_sideways_and_viewed_upright() -> None:
    image_class = small("camera-12MP-exif6", (240, 320))  # shown portrait
    data = encode("coffee", image_class)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (320, 240)  # stored landscape
        assert image.getexif()[EXIF_ORIENTATION] == 6
    decoded = decode(data, mode="standard", max_pixels=10**8, max_frames=1)
    assert decoded.frames[0].size == (240, 320)


def test_rgba_png_has_transparent_corners() -> None:
    data = encode("coffee", dataclasses.replace(BY_NAME["png-rgba"], size=(200, 200)))
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGBA"
        assert image.getpixel((0, 0))[3] == 0
        assert image.getpixel((100, 100))[3] == 255


def test_files_are_cached_by_class_and_photo(tmp_path: Path) -> None:
    image_class = small("thumb-500", (100, 75))
    first = make("coffee", image_class, tmp_path)
    assert first.path.read_bytes() == first.data == encode("coffee", image_class)
    assert make("coffee", image_class, tmp_path).data == first.data
    assert first.path.name == "thumb-500_coffee.jpg"
