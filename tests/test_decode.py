"""function/decode.py: what a viewer sees (standard) versus Yahoo's first frame (reference)."""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from function.decode import MAX_FRAMES_WALKED, configure_pillow, decode
from function.errors import ImageTooLarge, UndecodableImage, UnsupportedMediaType
from function.formats import gif_frames, jpeg_scans, sniff, tiff_pages
from function.logs import configure_logging
from tests.photos import photo_bytes, photo_jpeg

CAPS = {"max_pixels": 50_000_000, "max_frames": 8}


@pytest.fixture(autouse=True, scope="module")
def pillow() -> None:
    configure_pillow()


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_sniff_knows_the_allowed_formats_only() -> None:
    image = Image.new("RGB", (8, 8))
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        assert sniff(encode(image, fmt)) == fmt
    assert sniff(b"%!PS-Adobe-3.0 EPSF-3.0") is None
    assert sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    with pytest.raises(UnsupportedMediaType):
        decode(b"8BPS\x00\x01", mode="standard", **CAPS)


def test_exif_orientation_applied_in_standard_only() -> None:
    image = Image.new("RGB", (200, 100), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes())
    standard = decode(data, mode="standard", **CAPS)
    reference = decode(data, mode="reference", **CAPS)
    assert standard.frames[0].size == (100, 200)
    assert reference.frames[0].size == (200, 100)
    assert (standard.width, standard.height) == (200, 100)  # as stored, reported as such


def test_transparency_composited_onto_white() -> None:
    clear = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    standard = decode(encode(clear, "PNG"), mode="standard", **CAPS)
    reference = decode(encode(clear, "PNG"), mode="reference", **CAPS)
    assert standard.frames[0].getpixel((25, 25)) == (255, 255, 255)
    assert reference.frames[0].getpixel((25, 25)) == (0, 0, 0)  # convert('RGB') drops alpha


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # red
    decoded = decode(encode(cmyk, "JPEG"), mode="standard", **CAPS)
    red, green, blue = decoded.frames[0].getpixel((20, 20))
    assert decoded.frames[0].mode == "RGB" and red > 200 and green < 60 and blue < 60


def test_icc_profile_is_converted_to_srgb() -> None:
    # scikit-image's rocket.jpg carries an Adobe RGB (1998) profile: a viewer shows it in
    # sRGB with more saturated colours than the raw values; reference mode keeps the raw.
    data = photo_bytes("rocket")
    with Image.open(io.BytesIO(data)) as image:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(image.info["icc_profile"]))
        assert "Adobe RGB" in ImageCms.getProfileDescription(profile)
        expected = ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"))
        raw = image.convert("RGB")
    standard = decode(data, mode="standard", **CAPS).frames[0]
    reference = decode(data, mode="reference", **CAPS).frames[0]
    assert np.array_equal(np.asarray(reference), np.asarray(raw))
    assert np.array_equal(np.asarray(standard), np.asarray(expected))
    assert not np.array_equal(np.asarray(standard), np.asarray(reference))


def test_large_jpeg_is_drafted_under_the_pixel_cap_in_standard_mode() -> None:
    data = photo_jpeg("coffee", (4000, 3000))  # 12 MP
    caps = {"max_pixels": 2_000_000, "max_frames": 8}
    standard = decode(data, mode="standard", **caps)
    assert (standard.width, standard.height) == (4000, 3000)
    assert standard.frames[0].size == (500, 375)  # 1/8 DCT scaling, still >= 256 px
    with pytest.raises(ImageTooLarge):
        decode(data, mode="reference", **caps)


def test_animation_frames_sampled_within_the_pixel_budget() -> None:
    frames = [Image.new("RGB", (100, 100), (i, 0, 0)) for i in range(20)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode(data, mode="standard", max_pixels=100 * 100 * 10, max_frames=4)
    # Only the first 10 frames fit the budget (compositing decodes every frame up to k).
    assert decoded.frames_total == 20 and decoded.frame_indices == (0, 3, 6, 9)
    assert len(decoded.frames) == 4
    with pytest.raises(ImageTooLarge):
        decode(data, mode="standard", max_pixels=100 * 99, max_frames=4)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_truncation_is_reported(fmt: str) -> None:
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
    if fmt == "GIF":
        image = image.convert("P")
    data = encode(image, fmt)
    assert decode(data, mode="standard", **CAPS).truncated is False
    cut = decode(data[: len(data) * 3 // 4], mode="standard", **CAPS)
    assert cut.truncated is True and cut.frames[0].size == (300, 300)


def test_garbage_after_a_valid_header_is_422() -> None:
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(UndecodableImage):
        decode(data[:40] + b"\x00" * 20, mode="standard", **CAPS)


# --- animations with a broken later frame, BigTIFF, frame counting -------------------------
def apng_frames(count: int = 4) -> list[Image.Image]:
    return [Image.new("RGBA", (64, 48), (i * 60, 0, 0, 255)) for i in range(count)]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_apng_with_a_broken_later_frame_scores_the_frames_before_it() -> None:
    frames = apng_frames()
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    # The last frame's control chunk declares a frame wider than the canvas.
    at = data.rindex(b"fcTL") - 4
    size = struct.unpack_from(">I", data, at)[0]
    body = bytearray(data[at + 8 : at + 8 + size])
    body[4:8] = struct.pack(">I", 5000)
    broken = data[:at] + png_chunk(b"fcTL", bytes(body)) + data[at + 12 + size :]
    decoded = decode(broken, mode="standard", **CAPS)
    assert decoded.frame_indices == (0, 1, 2) and len(decoded.frames) == 3
    assert decoded.truncated and decoded.frames_total == 4
    assert decoded.frames[2].getpixel((0, 0)) == (120, 0, 0)
    assert not decode(data, mode="standard", **CAPS).truncated


def test_mpo_with_a_broken_later_picture_scores_the_pictures_before_it() -> None:
    pictures = [frame.convert("RGB") for frame in apng_frames()]
    data = encode(pictures[0], "MPO", save_all=True, append_images=pictures[1:])
    last = data.rindex(b"\xff\xd8\xff")
    decoded = decode(data[:last] + b"\0" * (len(data) - last), mode="standard", **CAPS)
    assert decoded.frame_indices == (0, 1, 2) and decoded.truncated
    assert decode(data[:last] + b"\0" * 16, mode="reference", **CAPS).frame_indices == (0,)


def test_bigtiff_is_accepted_and_its_pages_counted() -> None:
    pages = [Image.new("RGB", (40, 30), (0, 90 * i, 0)) for i in range(3)]
    data = encode(pages[0], "TIFF", big_tiff=True, save_all=True, append_images=pages[1:])
    assert data[:4] == b"II+\0" and sniff(data) == "TIFF"
    assert tiff_pages(data, 10) == 3
    assert tiff_pages(data, 1) == 2  # stops one past the limit
    decoded = decode(data, mode="standard", **CAPS)
    assert decoded.frames_total == 3 and decoded.frame_indices == (0, 1, 2)
    assert decoded.frames[2].getpixel((0, 0)) == (0, 180, 0)
    motorola = b"MM\0+\0\x08\0\0" + b"\0" * 8  # big-endian, first directory at offset 0: none
    assert sniff(motorola) == "TIFF" and tiff_pages(motorola, 10) == 0


def test_jpeg_scans_are_the_start_of_scan_markers_wherever_they_are() -> None:
    cases = [
        b"",
        b"\xff",
        b"\xda",
        b"\xff\xda",  # the whole input
        b"\xda\xff\xda\xff",  # a lone 0xDA first, a 0xFF last
        b"\xff\xff\xda\xda\xff\xda",
        bytes(range(256)) * 3,  # FF then 00: never a marker
        np.random.default_rng(7).integers(0, 256, 200_000, dtype=np.uint8).tobytes(),
    ]
    progressive = encode(Image.new("RGB", (64, 48), (9, 99, 199)), "JPEG", progressive=True)
    for data in [*cases, progressive]:
        assert jpeg_scans(data) == data.count(b"\xff\xda"), data[:16]
    assert jpeg_scans(progressive) > 1


def test_gif_frames_are_counted_with_an_early_stop() -> None:
    frames = [Image.new("RGB", (4, 4), (i * 8, 0, 0)) for i in range(30)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)
    with Image.open(io.BytesIO(data)) as image:
        assert gif_frames(data, 1000) == image.n_frames == 30
    assert gif_frames(data, 9) == 10
    # Many more frames than are ever walked: the count stops at the cap plus one.
    many = [Image.new("RGB", (1, 1), (255 * (i % 2), 0, 0)) for i in range(MAX_FRAMES_WALKED + 500)]
    data = encode(many[0], "GIF", save_all=True, append_images=many[1:], disposal=1)
    decoded = decode(data, mode="standard", **CAPS)
    assert decoded.frames_total == MAX_FRAMES_WALKED + 1
    assert len(decoded.frames) == CAPS["max_frames"]


def test_pillow_errors_about_a_callers_file_are_logged_as_warnings() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", stream)
        configure_pillow()
        logging.getLogger("PIL.TiffImagePlugin").error("bad tag in %s", "file")
        logging.getLogger("nsfwoid").error("our own error")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    pil, ours = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (pil["log.level"], pil["log"]["logger"], pil["message"]) == (
        "warning",
        "PIL.TiffImagePlugin",
        "bad tag in file",
    )
    assert ours["log.level"] == "error"


def long_gif(frames: int) -> bytes:
    images = [Image.new("L", (4, 4), n % 256) for n in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=10)
    return buffer.getvalue()


def test_frames_walked_are_bounded_whatever_the_animation_declares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bounded work, counted: an animation of many tiny frames walks at most
    ``MAX_FRAMES_WALKED`` of them and keeps only ``max_frames`` (no clock involved)."""
    from PIL import GifImagePlugin

    from function.decode import MAX_FRAMES_WALKED

    seeks: list[int] = []
    real_seek = GifImagePlugin.GifImageFile.seek

    def seek(self: GifImagePlugin.GifImageFile, frame: int) -> None:
        seeks.append(frame)
        real_seek(self, frame)

    data = long_gif(MAX_FRAMES_WALKED + 500)
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "seek", seek)
    decoded = decode(data, mode="standard", max_pixels=10**8, max_frames=8)
    assert MAX_FRAMES_WALKED < decoded.frames_total <= MAX_FRAMES_WALKED + 500
    assert len(decoded.frames) == 8
    assert max(seeks) < MAX_FRAMES_WALKED  # never walked past the bound
    assert len([frame for frame in seeks if frame > 0]) <= MAX_FRAMES_WALKED
    assert decoded.frame_indices[-1] == MAX_FRAMES_WALKED - 1
