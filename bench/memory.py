"""``--phases memory``: what decoding costs in resident memory, per format and under load.

Each figure is taken in a fresh subprocess (a process's peak resident set only grows, so one
process per measurement): the peak (``VmHWM``) after decoding minus the peak before it, over
the megapixels decoded. The worker imports ``function.decode`` from the checkout given as
``root``, so the same script measures another checkout (an older commit) side by side.

The server figure is a real ``python -m function.serve`` sent ``concurrent`` worst-case
images at once; its worker's ``VmHWM`` is read from /proc.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from bench.ours import ROOT, Client, ServerProcess, memory_kb
from function.budget import MIB, budget_from_limit

Log = Callable[[str], None]

FORMATS = (
    "JPEG",
    "PNG-RGB",
    "PNG-RGBA",
    "PNG-P-transparency",
    "PNG-RGBA-16bit",
    "GIF",
    "WEBP-RGBA",
    "TIFF-RGBA",
    "BMP",
)

_WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from function.decode import configure_pillow, decode
configure_pillow()
data = Path(sys.argv[2]).read_bytes()
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
before = hwm()
began = time.perf_counter()
decoded = decode(data, mode="standard", max_pixels=10**9, max_frames=8)
print(json.dumps({"before_kb": before, "after_kb": hwm(), "seconds": time.perf_counter() - began,
                  "size": [decoded.width, decoded.height]}))
"""


_ALLOCATOR_WORKER = r"""
import ctypes, io, json, os, sys, threading
sys.path.insert(0, sys.argv[1])
from PIL import Image
from function.allocator import configure_allocator
from function.decode import configure_pillow, decode
configure_pillow()
if sys.argv[2] == "server":
    configure_allocator()
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
images = []
for i, size in enumerate([(1500, 1000), (2600, 1900), (4000, 3000), (3000, 2200)]):
    for fmt, mode in (("PNG", "RGBA"), ("TIFF", "RGB"), ("GIF", "P"), ("WEBP", "RGBA")):
        buffer = io.BytesIO()
        Image.new(mode, size, i).save(buffer, format=fmt)
        images.append(buffer.getvalue())
start = rss()
after = []
for round_ in range(4):
    def work(k):
        for data in images[k::8]:
            decode(data, mode="standard", max_pixels=10**9, max_frames=8)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    after.append(rss())
trimmed = None
if sys.argv[2] == "trim":
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = rss()
print(json.dumps({"start_mib": start, "after_each_round_mib": after, "after_trim_mib": trimmed}))
"""


def allocator(root: Path, log: Log) -> dict[str, Any]:
    """Resident memory left after rounds of mixed decodes on 8 threads, glibc as it comes
    (``default``), with ``MALLOC_ARENA_MAX=2``, with ``malloc_trim(0)`` at the end, and with
    the settings the server makes (``server``, ``function/allocator.py``)."""
    found: dict[str, Any] = {}
    for variant in ("default", "arena_max_2", "trim", "server"):
        env = dict(os.environ)
        if variant == "arena_max_2":
            env["MALLOC_ARENA_MAX"] = "2"
        done = subprocess.run(
            [sys.executable, "-c", _ALLOCATOR_WORKER, str(root), variant],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            check=False,
        )
        found[variant] = (
            json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-300:]}
        )
        log(f"memory allocator {variant}: {found[variant]}")
    return found


def _pattern(width: int, height: int, channels: int) -> np.ndarray:
    """Smooth, well-compressing content (a large file is not needed for a large image: that
    is the point of the attack), with a varying alpha channel where there is one."""
    small = np.random.default_rng(0).integers(0, 256, (64, 64, channels), dtype=np.uint8)
    tile = Image.fromarray(small if channels > 1 else small[:, :, 0])
    return np.asarray(tile.resize((width, height), Image.Resampling.NEAREST))


def png16_rgba(width: int, height: int) -> bytes:
    """A 16-bit-per-channel RGBA PNG (Pillow cannot write one), rows filtered with ``None``."""
    pixels = _pattern(width, height, 4).astype(">u2") * 257
    rows = np.concatenate(
        [np.zeros((height, 1), np.uint8), pixels.view(np.uint8).reshape(height, -1)], axis=1
    )
    compressor = zlib.compressobj(6)
    idat = compressor.compress(rows.tobytes()) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def worst_case(fmt: str, width: int, height: int) -> bytes:
    """One image of ``fmt`` (a ``FORMATS`` label) at ``width``x``height``, made here."""
    if fmt == "PNG-RGBA-16bit":
        return png16_rgba(width, height)
    buffer = io.BytesIO()
    if fmt == "PNG-P-transparency":
        image = Image.fromarray(_pattern(width, height, 1)).convert("P")
        image.save(buffer, format="PNG", transparency=0)
    elif fmt in ("PNG-RGBA", "WEBP-RGBA", "TIFF-RGBA"):
        image = Image.fromarray(_pattern(width, height, 4), "RGBA")
        kind = fmt.split("-")[0]
        options: dict[str, Any] = {"lossless": True, "method": 0} if kind == "WEBP" else {}
        if kind == "TIFF":
            options = {"compression": "tiff_adobe_deflate"}
        image.save(buffer, format=kind, **options)
    elif fmt == "GIF":
        Image.fromarray(_pattern(width, height, 1)).convert("P").save(buffer, format="GIF")
    else:
        kind = fmt.split("-")[0]
        Image.fromarray(_pattern(width, height, 3), "RGB").save(buffer, format=kind)
    return buffer.getvalue()


def image_file(fmt: str, size: tuple[int, int], directory: Path) -> Path:
    path = directory / f"memory_{fmt}_{size[0]}x{size[1]}.{fmt.split('-')[0].lower()}"
    if not path.is_file():
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(worst_case(fmt, *size))
        tmp.replace(path)
    return path


def decode_cost(root: Path, path: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Peak resident growth of decoding ``path`` in a fresh process over ``root``'s code."""
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(root), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    found: dict[str, Any] = json.loads(done.stdout)
    width, height = found["size"]
    grown_mib = (found["after_kb"] - found["before_kb"]) / 1024
    found["peak_growth_mib"] = round(grown_mib, 1)
    found["mib_per_megapixel"] = round(grown_mib / (width * height / 1e6), 2)
    return found


def per_format(
    roots: dict[str, Path], directory: Path, size: tuple[int, int], log: Log
) -> dict[str, dict[str, Any]]:
    """``{format: {label: cost}}`` for each checkout in ``roots``, measured side by side."""
    table: dict[str, dict[str, Any]] = {}
    for fmt in FORMATS:
        path = image_file(fmt, size, directory)
        table[fmt] = {"file_bytes": path.stat().st_size}
        for label, root in roots.items():
            table[fmt][label] = decode_cost(root, path)
            log(f"memory {fmt} {label}: {table[fmt][label].get('mib_per_megapixel')} MiB/MP")
    return table


def server_peak(
    env: dict[str, str], files: list[Path], out: Path, log: Log, concurrent: int = 8
) -> dict[str, Any]:
    """The server worker's peak resident set while ``concurrent`` clients each post one file."""
    with ServerProcess(env, out / "server-memory.log") as server:
        server.wait_ready()
        worker = server.worker_pid()
        idle = memory_kb(worker)
        bodies = [files[i % len(files)].read_bytes() for i in range(concurrent)]
        statuses: list[int] = [0] * concurrent
        start = threading.Barrier(concurrent)

        def send(i: int) -> None:
            client = Client(server.port, timeout=120)
            try:
                start.wait()
                statuses[i], _ = client.request("POST", "/", bodies[i], "image/png")
            finally:
                client.close()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(concurrent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        peak = memory_kb(worker)
    result = {
        "concurrent": concurrent,
        "statuses": statuses,
        "idle_rss_mib": round(idle["vmrss_kb"] / 1024, 1),
        "peak_rss_mib": round(peak["vmhwm_kb"] / 1024, 1),
        "end_rss_mib": round(peak["vmrss_kb"] / 1024, 1),
    }
    log(f"memory server x{concurrent}: {result}")
    return result


def memory(out: Path, env: dict[str, str], log: Log, before: Path | None = None) -> dict[str, Any]:
    """The memory phase: per-format cost (this checkout, and ``before`` if given) and the
    server's peak under 8 concurrent worst-case 50 MP images (RGBA, 16-bit and palette
    PNGs, lossless WebP)."""
    directory = out / "images"
    roots = {"after": ROOT}
    if before is not None:
        roots = {"before": before, "after": ROOT}
    report: dict[str, Any] = {"size": [4000, 4000]}
    report["per_format"] = per_format(roots, directory, (4000, 4000), log)
    report["allocator"] = allocator(ROOT, log)
    worst = [
        image_file(fmt, (8000, 6250), directory)
        for fmt in ("PNG-RGBA", "PNG-RGBA-16bit", "PNG-P-transparency", "WEBP-RGBA")
    ]
    # The budget a pod with the shipped memory limit derives from its cgroup (this machine
    # may have no limit, or another one).
    limit = shipped_memory_limit()
    server_env = {"NSFWOID_DECODE_MEMORY_BYTES": str(budget_from_limit(limit)), **env}
    report["shipped_limit_mib"] = limit // MIB
    report["server_8x50MP"] = server_peak(server_env, worst, out, log)
    return report


def shipped_memory_limit() -> int:
    """The container memory limit in knative/service.yaml, in bytes."""
    service = yaml.safe_load((ROOT / "knative" / "service.yaml").read_text(encoding="utf-8"))
    raw = service["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(raw[:-2]) * units[raw[-2:]] if raw[-2:] in units else int(raw)


if __name__ == "__main__":  # measure one other checkout's per-format cost alone
    other = Path(sys.argv[1])
    print(
        json.dumps(
            per_format({"before": other}, ROOT / "bench" / "out" / "images", (4000, 4000), print),
            indent=1,
        )
    )
