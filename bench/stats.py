"""Summaries of timing samples: the few numbers a report needs, computed one way everywhere."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100), as ``numpy.percentile`` does."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median, p10/p90, min, mean and count of ``samples`` (all in the samples' unit)."""
    if not samples:
        return {"n": 0, "median": math.nan, "p10": math.nan, "p90": math.nan, "min": math.nan}
    return {
        "n": len(samples),
        "median": percentile(samples, 50),
        "p10": percentile(samples, 10),
        "p90": percentile(samples, 90),
        "min": min(samples),
        "mean": sum(samples) / len(samples),
    }


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs, NaN when either side is missing."""
    if not theirs or math.isnan(theirs) or math.isnan(ours):
        return math.nan
    return ours / theirs
