"""bench/report.py: how a target's verdict reads, from the ratio and the floor's own ratio."""

from __future__ import annotations

import math

from bench.report import Target


def target(value: float, best: float = math.nan, higher: bool = False) -> Target:
    return Target("t", value, 1.0, higher, "", best)


def test_met_missed_and_beyond_the_floor() -> None:
    assert target(0.9).verdict == "met"
    assert target(1.1).verdict == "MISSED"  # no floor measured
    assert target(1.1, best=0.9).verdict == "MISSED"  # the floor would meet it: ours to close
    beyond = target(1.1, best=1.05)
    assert beyond.beyond_floor and beyond.verdict.startswith("missed: beyond the floor")
    assert not target(0.9, best=1.05).beyond_floor  # met stays met


def test_higher_is_better_and_nan() -> None:
    assert target(1.2, higher=True).met
    assert target(0.8, best=0.9, higher=True).beyond_floor
    assert not target(math.nan).met
