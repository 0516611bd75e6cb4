"""Photo-like upload JPEGs at the benchmark's sizes, made from the real sample photos.

Synthetic noise or flat colour would flatter or punish the JPEG decoder (entropy decoding is
most of a large JPEG's cost), so every image is a real photograph resized with Lanczos and
saved at quality 90, as a camera or phone upload would be. They are written once under
``bench/out/images`` (the peer worker reads them from there) and reused by later runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SIZES: dict[str, tuple[int, int]] = {
    "640x480": (640, 480),
    "1920x1080": (1920, 1080),
    "12MP": (4000, 3000),
    "24MP": (6000, 4000),
}
"""Label → (width, height): a thumbnail, a screen, a phone photo, a DSLR photo."""

ROTATION = ("astronaut", "coffee", "chelsea", "rocket")
"""Photos the latency loops rotate through, so no single picture's content decides."""


@dataclass(frozen=True)
class BenchImage:
    key: str
    photo: str
    size: str
    path: Path
    data: bytes


def make_image(photo: str, size: str, directory: Path) -> BenchImage:
    """The photo as a quality-90 JPEG of ``SIZES[size]``, cached as a file in ``directory``."""
    from tests.photos import photo_jpeg  # the real photos the test suite uses

    width, height = SIZES[size]
    key = f"{photo}_{width}x{height}"
    path = directory / f"{key}.jpg"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(photo_jpeg(photo, (width, height), 90))
        tmp.replace(path)
    return BenchImage(key, photo, size, path, path.read_bytes())


def rotation_images(directory: Path) -> dict[str, list[BenchImage]]:
    """Size label → the rotation photos at that size."""
    return {size: [make_image(p, size, directory) for p in ROTATION] for size in SIZES}


def all_photos() -> list[str]:
    from tests.photos import PHOTOS

    return list(PHOTOS)
