"""The machine: CPU model, load, and its fp32 matrix-multiply peak (the FLOP floor's basis)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

MODEL_GFLOP = 2.137
"""open_nsfw's cost per 224×224 image (multiply-adds counted as 2 FLOPs)."""

_SGEMM = """
import json, time
import numpy as np
n = {n}
rng = np.random.default_rng(0)
a = rng.random((n, n), dtype=np.float32)
b = rng.random((n, n), dtype=np.float32)
a @ b
best = float("inf")
deadline = time.perf_counter() + {budget}
for _ in range({reps}):
    began = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - began)
    if time.perf_counter() > deadline:
        break
print(json.dumps({{"gflops": 2 * n**3 / best / 1e9, "n": n, "best_s": best}}))
"""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def sgemm_peak(threads: int, n: int = 3072, reps: int = 30, budget: float = 12) -> dict[str, Any]:
    """Best fp32 GFLOP/s of numpy's ``float32 @ float32`` on ``threads`` BLAS threads.

    Run in a fresh process because BLAS reads its thread count from the environment when
    numpy is imported. The best of many repetitions is the machine's peak (what a perfect
    kernel could reach), which is what a floor should be computed from; many short ones
    rather than a few long ones, so that on a shared machine some land in a quiet moment.
    """
    env = {
        **os.environ,
        **{
            name: str(threads)
            for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        },
    }
    out = subprocess.run(
        [sys.executable, "-c", _SGEMM.format(n=n, reps=reps, budget=budget)],
        capture_output=True,
        text=True,
        env=env,
        timeout=budget + 60,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    result["threads"] = threads
    return result


def floor_ms(gflops: float) -> float:
    """The fp32 FLOP floor of one image's inference at ``gflops``, in milliseconds."""
    return MODEL_GFLOP / gflops * 1000
