"""Real photographs that ship inside installed wheels, for verification without downloads.

scikit-image and matplotlib bundle a few sample photos; both are test/dev dependencies, so
a converter environment without them simply gets fewer (possibly zero) photos and records
that in the manifest instead of failing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "ihc": "ihc.png",
    # Greyscale texture photographs: real camera images, decoded to RGB like any upload.
    "brick": "brick.png",
    "gravel": "gravel.png",
    "grass": "grass.png",
}
MATPLOTLIB_PHOTOS = {
    "grace_hopper": "grace_hopper.jpg",
    "present": "Minduka_Present_Blue_Pack.png",  # RGBA photo: exercises the alpha path
}


def _package_dir(package: str) -> Path | None:
    # find_spec instead of import: locating files must not pay for importing the libraries.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def find_photos() -> dict[str, Path]:
    """Name → path of every bundled sample photo that is installed, in a stable order."""
    found: dict[str, Path] = {}
    for package, subdir, photos in (
        ("skimage", "data", SKIMAGE_PHOTOS),
        ("matplotlib", "mpl-data/sample_data", MATPLOTLIB_PHOTOS),
    ):
        root = _package_dir(package)
        if root is None:
            continue
        for name, filename in photos.items():
            path = root / subdir / filename
            if path.is_file():
                found[name] = path
    return found
