"""In the server, libtiff's plain-text stderr lines become JSON warning log lines.

Run in a subprocess: it rewires the process's fd 2, which pytest itself uses.
"""

from __future__ import annotations

import json
import subprocess
import sys

from function.config import REPO_ROOT

SCRIPT = r"""
import io, os
from PIL import Image
from function.decode import configure_pillow, decode
from function.errors import UndecodableImage
from function.logs import NativeStderr, configure_logging

configure_logging("INFO")
configure_pillow()
native = NativeStderr()
buffer = io.BytesIO()
Image.new("RGB", (300, 200), (1, 2, 3)).save(buffer, format="TIFF", compression="tiff_lzw")
data = bytearray(buffer.getvalue())
with Image.open(io.BytesIO(bytes(data))) as image:
    strips = list(zip(image.tag_v2[273], image.tag_v2[279]))
for offset, count in strips:
    data[offset : offset + count] = b"\xff" * count
try:
    decode(bytes(data), mode="standard", max_pixels=10**7, max_frames=8)
except UndecodableImage:
    pass
os.write(2, b'{"severity": "INFO", "message": "already json"}\n')
native.close()
"""


def test_libtiff_stderr_becomes_json_warnings_and_json_passes_through() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    native = [line for line in lines if line["log"]["logger"] == "native"]
    assert native, done.stdout
    assert all(line["log.level"] == "warning" for line in native)
    assert all(line["nsfwoid"]["source"] == "stderr" for line in native)
    assert any("table" in line["message"] for line in native)  # libtiff's LZW complaint
    assert done.stderr.splitlines() == [b'{"severity": "INFO", "message": "already json"}']
