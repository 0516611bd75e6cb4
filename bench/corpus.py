"""Upload-like image classes, made deterministically from the real sample photos.

``bench/images.py`` makes smooth photos (Lanczos-resized, quality 90: ~1 bit per pixel), which
decode quickly. Camera and phone photos carry sensor noise and texture, run to 2-4 bits per
pixel at quality 90, and their entropy decoding is most of a large JPEG's cost; uploads also
arrive as progressive or 4:4:4 JPEGs, rotated by EXIF, as PNG screenshots, RGBA PNGs and small
thumbnails. Each class here is one of those, at one size, over a few real photos.

Noise is seeded per photo and class, so the same files come out on every machine; they are
written once under the output directory (the peer worker reads them there) and reused.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from bench.images import BenchImage

EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageClass:
    """One kind of upload: how it is made and what it stands for."""

    name: str
    size: tuple[int, int]
    """(width, height) of the picture as a viewer shows it (before EXIF rotation is undone)."""
    kind: str
    """``camera`` (noisy JPEG), ``smooth`` (today's bench JPEG), ``png`` or ``thumb``."""
    description: str
    noise: float = 0.0
    """Standard deviation of the Gaussian sensor noise added per channel (0-255 scale)."""
    subsampling: int = 2
    """Pillow's JPEG chroma subsampling: 2 = 4:2:0, 0 = 4:4:4."""
    progressive: bool = False
    orientation: int = 1
    """EXIF orientation written into the file (6: stored rotated, shown upright)."""
    quality: int = 90

    @property
    def content_type(self) -> str:
        return "image/png" if self.kind == "png" else "image/jpeg"

    @property
    def suffix(self) -> str:
        return ".png" if self.kind == "png" else ".jpg"


CLASSES: tuple[ImageClass, ...] = (
    ImageClass("smooth-1080p", (1920, 1080), "smooth", "today's bench photo, q90, 4:2:0"),
    ImageClass("smooth-12MP", (4000, 3000), "smooth", "today's bench photo, q90, 4:2:0"),
    ImageClass("camera-640x480", (640, 480), "camera", "noise σ7, q90, 4:2:0", noise=7),
    ImageClass("camera-1080p", (1920, 1080), "camera", "noise σ7, q90, 4:2:0", noise=7),
    ImageClass(
        "camera-1080p-444-prog",
        (1920, 1080),
        "camera",
        "noise σ7, q90, 4:4:4, progressive",
        noise=7,
        subsampling=0,
        progressive=True,
    ),
    ImageClass("camera-12MP", (4000, 3000), "camera", "noise σ7, q90, 4:2:0", noise=7),
    ImageClass(
        "camera-12MP-444-prog",
        (4000, 3000),
        "camera",
        "noise σ7, q90, 4:4:4, progressive",
        noise=7,
        subsampling=0,
        progressive=True,
    ),
    ImageClass(
        "camera-12MP-exif6",
        (3000, 4000),
        "camera",
        "portrait phone photo stored 4000×3000 with EXIF orientation 6, noise σ7, q90",
        noise=7,
        orientation=6,
    ),
    ImageClass(
        "camera-12MP-noisy", (4000, 3000), "camera", "noise σ11, q92, 4:2:0", noise=11, quality=92
    ),
    ImageClass("camera-24MP", (6000, 4000), "camera", "noise σ7, q90, 4:2:0", noise=7),
    ImageClass("thumb-500", (500, 375), "thumb", "500 px thumbnail, q85", quality=85),
    ImageClass("png-screenshot", (1920, 1080), "png", "UI screenshot: flat panels, text, a photo"),
    ImageClass("png-rgba", (1024, 1024), "png", "RGBA photo with a transparent vignette"),
)
"""Every class the ``classes`` phase measures, in report order."""

BY_NAME = {image_class.name: image_class for image_class in CLASSES}


def _photo(name: str) -> Image.Image:
    from tests.photos import PHOTOS  # the real photos the test suite uses

    with Image.open(PHOTOS[name]) as image:
        return image.convert("RGB")


def _seed(*parts: str) -> int:
    return zlib.crc32("/".join(parts).encode())


def _noisy(image: Image.Image, sigma: float, seed: int) -> Image.Image:
    """Sensor-like noise: independent Gaussian per pixel and channel, a little stronger in the
    darks (shot noise is not, but read noise and the tone curve make darks look noisier)."""
    pixels = np.asarray(image, dtype=np.float32)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(pixels.shape, dtype=np.float32)
    gain = sigma * (1.25 - pixels / 510)  # σ·1.25 in black, σ·0.75 in white
    noisy = np.clip(pixels + noise * gain + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy, "RGB")


def _jpeg(image: Image.Image, image_class: ImageClass) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, object] = {
        "quality": image_class.quality,
        "subsampling": image_class.subsampling,
        "progressive": image_class.progressive,
    }
    if image_class.orientation != 1:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = image_class.orientation
        options["exif"] = exif.tobytes()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _stored(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels as a camera stores them for ``orientation`` (the inverse of what viewers do)."""
    if orientation == 6:  # viewers rotate 90° clockwise; the sensor wrote it 90° anticlockwise
        return upright.transpose(Image.Transpose.ROTATE_90)
    if orientation == 1:
        return upright
    raise ValueError(f"orientation {orientation} is not made here")


def _screenshot(photo: Image.Image, size: tuple[int, int], seed: int) -> Image.Image:
    """A UI screenshot: title bar, sidebar, lines of 'text', buttons and one photo inset."""
    width, height = size
    rng = np.random.default_rng(seed)
    canvas = Image.new("RGB", size, (246, 247, 249))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, 56), fill=(32, 33, 36))
    draw.rectangle((0, 56, 280, height), fill=(232, 234, 237))
    for y in range(90, height - 40, 34):  # sidebar entries
        draw.rectangle((24, y, 24 + int(rng.integers(120, 230)), y + 12), fill=(95, 99, 104))
    inset = photo.resize((800, 450), Image.Resampling.LANCZOS)
    canvas.paste(inset, (340, 100))
    for y in range(590, height - 30, 22):  # paragraphs: runs of 'words'
        x = 340
        while x < width - 120:
            word = int(rng.integers(20, 90))
            draw.rectangle((x, y, x + word, y + 10), fill=(60, 64, 67))
            x += word + int(rng.integers(6, 12))
    for x in range(1200, width - 100, 170):  # buttons
        draw.rounded_rectangle((x, 110, x + 150, 150), radius=8, fill=(26, 115, 232))
    return canvas


def _rgba(photo: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The photo with a radial alpha falloff (transparent corners), as a cut-out sticker."""
    rgb = photo.resize(size, Image.Resampling.LANCZOS)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2))
    alpha = np.clip((1.2 - r) * 400, 0, 255).astype(np.uint8)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha, "L"))
    return rgba


def encode(photo: str, image_class: ImageClass) -> bytes:
    """The file for ``photo`` in ``image_class``: deterministic bytes for the same inputs."""
    source = _photo(photo)
    seed = _seed(photo, image_class.name)
    if image_class.kind == "png":
        if image_class.name == "png-screenshot":
            picture = _screenshot(source, image_class.size, seed)
        else:
            picture = _rgba(source, image_class.size)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=False, compress_level=6)
        return buffer.getvalue()
    width, height = image_class.size
    if image_class.orientation == 6:
        width, height = height, width  # as stored: the sensor's landscape
        upright = source.resize(image_class.size, Image.Resampling.LANCZOS)
        picture = _stored(upright, 6)
    else:
        picture = source.resize((width, height), Image.Resampling.LANCZOS)
    if image_class.noise:
        picture = _noisy(picture, image_class.noise, seed)
    return _jpeg(picture, image_class)


def make(photo: str, image_class: ImageClass, directory: Path) -> BenchImage:
    """``encode``'s file, cached in ``directory`` (written once, atomically)."""
    key = f"{image_class.name}_{photo}"
    path = directory / f"{key}{image_class.suffix}"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(encode(photo, image_class))
        tmp.replace(path)
    return BenchImage(key, photo, image_class.name, path, path.read_bytes())


def corpus(
    directory: Path,
    photos: tuple[str, ...],
    classes: tuple[ImageClass, ...] = CLASSES,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[BenchImage]]:
    """Class name → its images, one per photo."""
    found: dict[str, list[BenchImage]] = {}
    for image_class in classes:
        found[image_class.name] = [make(p, image_class, directory) for p in photos]
        if log:
            pixels = image_class.size[0] * image_class.size[1]
            bpp = [8 * len(img.data) / pixels for img in found[image_class.name]]
            log(f"corpus {image_class.name}: {min(bpp):.2f}-{max(bpp):.2f} bits/pixel")
    return found
