"""Mutated real images: whatever the bytes, the answer is a score or a 4xx, never a 5xx.

Hypothesis flips, inserts, deletes, overwrites and truncates bytes of a small real photo
encoded in each accepted format, and posts the result to the in-process function (raw body
or multipart, both preprocessing modes). Bounded and reproducible: a fixed number of
examples, derandomized, no example database.
"""

from __future__ import annotations

import io
from functools import cache

from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.photos import PHOTOS

FORMATS = {
    "JPEG": ("image/jpeg", {"quality": 85}),
    "PNG": ("image/png", {}),
    "GIF": ("image/gif", {}),
    "WEBP": ("image/webp", {"quality": 80}),
    "BMP": ("image/bmp", {}),
    "TIFF": ("image/tiff", {}),
    "TIFF-LZW": ("image/tiff", {"compression": "tiff_lzw"}),
    "PNG-RGBA": ("image/png", {}),
    "GIF-ANIMATED": ("image/gif", {}),
    "WEBP-ANIMATED": ("image/webp", {"lossless": True}),
}


@cache
def seed_image(name: str) -> bytes:
    """A small real photo in the format ``name`` (a few KB, so mutations hit structure)."""
    with Image.open(PHOTOS["chelsea"]) as photo:
        image = photo.convert("RGB").resize((48, 32))
    fmt = name.split("-")[0]
    _, options = FORMATS[name]
    buffer = io.BytesIO()
    if name == "PNG-RGBA":
        image.putalpha(200)
    if name.endswith("ANIMATED"):
        frames = [image, image.rotate(90), image.rotate(180)]
        frames[0].save(
            buffer, format=fmt, save_all=True, append_images=frames[1:], duration=50, **options
        )
    else:
        image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# Each mutation is (kind, position as a fraction of the length, a length, a byte value).
mutation = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "overwrite", "truncate", "duplicate"]),
    st.floats(min_value=0, max_value=1, allow_nan=False),
    st.integers(min_value=1, max_value=64),
    st.integers(min_value=0, max_value=255),
)


def mutate(data: bytes, mutations: list[tuple[str, float, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, length, value in mutations:
        if not out:
            break
        at = min(int(where * len(out)), len(out) - 1)
        if kind == "flip":
            out[at] ^= 1 << (value % 8)
        elif kind == "insert":
            out[at:at] = bytes([value]) * length
        elif kind == "delete":
            del out[at : at + length]
        elif kind == "overwrite":
            out[at : at + length] = bytes([value]) * len(out[at : at + length])
        elif kind == "truncate":
            del out[max(at, 1) :]
        elif kind == "duplicate":
            out[at:at] = out[at : at + length]
    return bytes(out)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(sorted(FORMATS)),
    mutations=st.lists(mutation, min_size=1, max_size=6),
    multipart=st.booleans(),
    reference=st.booleans(),
)
def test_mutated_images_get_a_score_or_a_4xx(
    app: Flask,
    name: str,
    mutations: list[tuple[str, float, int, int]],
    multipart: bool,
    reference: bool,
) -> None:
    data = mutate(seed_image(name), mutations)
    content_type, _ = FORMATS[name]
    client = app.test_client()
    query = {"preprocessing": "reference"} if reference else {}
    if multipart:
        # Encoded by hand: the test client would spool the upload to a file it leaves open.
        boundary = "fuzzBOUNDARY"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="x"\r\nContent-Type: {content_type}\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        response = client.post(
            "/",
            data=body,
            content_type=f"multipart/form-data; boundary={boundary}",
            query_string=query,
        )
    else:
        response = client.post("/", data=data, content_type=content_type, query_string=query)
    payload = response.get_json()
    assert response.status_code == 200 or 400 <= response.status_code < 500, payload
    if response.status_code == 200:
        assert 0.0 <= payload["score"] <= 1.0
    else:
        assert payload["error"]["code"] in {
            "undecodable_image",
            "image_too_large",
            "unsupported_media_type",
            "invalid_request",
        }, payload


def test_every_seed_image_scores(app: Flask) -> None:
    # The fuzzer's starting points are valid: mutations, not the seeds, make the failures.
    client = app.test_client()
    for name, (content_type, _) in FORMATS.items():
        response = client.post("/", data=seed_image(name), content_type=content_type)
        assert response.status_code == 200, (name, response.get_json())
