"""function/budget.py: concurrent decodes never hold more than the budget; the rest wait.

Pure logic, no model: threads and events, an injectable clock, and no elapsed-time asserts.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from PIL import Image

from function.budget import (
    MIB,
    RESERVED_BYTES,
    DecodeBudget,
    budget_from_limit,
    cgroup_memory_limit,
    default_budget,
)
from function.config import ConfigError, Settings
from function.decode import configure_pillow, decode, frame_cost
from function.errors import ImageTooLarge, Overloaded, UndecodableImage

FAR = 1e9  # a deadline that the fake clocks below never reach


def waiting_for(budget: DecodeBudget, count: int) -> None:
    """Block (bounded) until ``count`` threads wait in ``budget``'s queue."""
    done = threading.Event()
    for _ in range(2000):
        if budget.waiting >= count:
            done.set()
            break
        threading.Event().wait(0.005)
    assert done.is_set(), f"{count} waiter(s) expected, {budget.waiting} seen"


def test_an_image_larger_than_the_whole_budget_is_refused_at_once() -> None:
    budget = DecodeBudget(100)
    with pytest.raises(ImageTooLarge) as caught:
        budget.acquire(101, FAR)
    assert caught.value.status == 422 and caught.value.code == "image_too_large"
    assert budget.used == 0


def test_a_decode_that_does_not_fit_waits_until_another_releases() -> None:
    budget = DecodeBudget(100)
    budget.acquire(70, FAR)
    entered = threading.Event()

    def second() -> None:
        with budget.reserve(60, FAR):
            assert budget.used <= budget.limit
            entered.set()

    thread = threading.Thread(target=second)
    thread.start()
    waiting_for(budget, 1)
    assert not entered.is_set() and budget.used == 70
    budget.release(70)
    thread.join(timeout=10)
    assert entered.is_set() and budget.used == 0


def test_waiters_are_served_first_come_first_served_and_never_exceed_the_budget() -> None:
    budget = DecodeBudget(100)
    budget.acquire(100, FAR)
    order: list[int] = []
    peak: list[int] = []
    go = [threading.Event() for _ in range(3)]
    threads = []

    def worker(index: int, cost: int) -> None:
        with budget.reserve(cost, FAR):
            order.append(index)
            peak.append(budget.used)
            go[index].wait(10)

    for index, cost in enumerate((90, 10, 10)):
        threads.append(threading.Thread(target=worker, args=(index, cost)))
        threads[-1].start()
        waiting_for(budget, index + 1)
    budget.release(100)
    # The 90 goes first, then the first 10 beside it; the last 10 waits for either.
    for index in range(3):
        go[index].set()
    for thread in threads:
        thread.join(timeout=10)
    assert order[0] == 0 and sorted(order) == [0, 1, 2]
    assert max(peak) <= 100 and budget.used == 0


def test_a_wait_past_the_deadline_is_a_retryable_503() -> None:
    now = [0.0]
    budget = DecodeBudget(100, clock=lambda: now[0])
    budget.acquire(80, FAR)
    now[0] = 5.0  # the request's deadline (4.0) has passed by the time it asks
    with pytest.raises(Overloaded) as caught:
        budget.acquire(30, 4.0)
    assert caught.value.status == 503 and caught.value.retry_after
    assert budget.used == 80 and budget.waiting == 0


def test_a_deadline_reached_while_waiting_gives_up_and_lets_the_next_one_in() -> None:
    now = [0.0]
    budget = DecodeBudget(100, clock=lambda: now[0])
    budget.acquire(80, FAR)
    outcome: list[object] = []

    def impatient() -> None:
        try:
            budget.acquire(30, 1.0)
            outcome.append("acquired")
        except Overloaded as exc:
            outcome.append(exc)

    thread = threading.Thread(target=impatient)
    thread.start()
    waiting_for(budget, 1)
    now[0] = 2.0
    budget.release(0)  # any change wakes the waiters, which see the clock past their deadline
    thread.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], Overloaded)
    assert budget.waiting == 0 and budget.used == 80


def test_budget_is_derived_from_the_cgroup_limit(tmp_path: Path) -> None:
    limit = tmp_path / "memory.max"
    limit.write_text("1610612736\n")
    assert cgroup_memory_limit(limit) == 1536 * MIB
    assert default_budget(None, limit) == 1536 * MIB - RESERVED_BYTES
    assert default_budget(300 * MIB, limit) == 300 * MIB  # the setting wins
    limit.write_text("max\n")
    assert cgroup_memory_limit(limit) is None
    assert cgroup_memory_limit(tmp_path / "absent") is None
    assert default_budget(None, tmp_path / "absent") > 0
    assert budget_from_limit(100 * MIB) > 0  # a tiny limit still leaves a small budget


def test_the_setting_takes_bytes_or_kubernetes_suffixes() -> None:
    assert Settings.from_env({}).decode_memory_bytes is None
    env = "NSFWOID_DECODE_MEMORY_BYTES"
    assert Settings.from_env({env: "600Mi"}).decode_memory_bytes == 600 * MIB
    assert Settings.from_env({env: "1Gi"}).decode_memory_bytes == 1 << 30
    assert Settings.from_env({env: "1000"}).decode_memory_bytes == 1000
    for bad in ("0", "-5", "lots", "1.5Gi"):
        with pytest.raises(ConfigError, match=env):
            Settings.from_env({env: bad})


def png(size: tuple[int, int], mode: str = "RGBA") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 0).save(buffer, format="PNG")
    return buffer.getvalue()


def broken_strips(size: tuple[int, int]) -> bytes:
    """An LZW TIFF whose header and directory are intact but whose strips are garbage."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="TIFF", compression="tiff_lzw")
    data = bytearray(buffer.getvalue())
    with Image.open(io.BytesIO(bytes(data))) as image:
        strips = zip(image.tag_v2[273], image.tag_v2[279], strict=True)
    for offset, count in strips:
        data[offset : offset + count] = b"\xff" * count
    return bytes(data)


def test_decode_reserves_its_cost_and_gives_it_back() -> None:
    configure_pillow()
    caps = {"mode": "standard", "max_pixels": 50_000_000, "max_frames": 8}
    data = png((1500, 1000))
    cost = frame_cost("PNG", 1500, 1000, animated=False)
    with pytest.raises(ImageTooLarge):
        decode(data, **caps, budget=DecodeBudget(cost - 1))
    budget = DecodeBudget(cost)
    assert decode(data, **caps, budget=budget).frames[0].size == (750, 1000)
    assert budget.used == 0
    with pytest.raises(UndecodableImage):  # a broken file gives its reservation back too
        decode(broken_strips((1500, 1000)), **caps, budget=budget)
    assert budget.used == 0
    # Held by another decode: this one waits, and past its deadline answers 503.
    budget.acquire(cost, FAR)
    with pytest.raises(Overloaded):
        decode(data, **caps, budget=budget, deadline=0.0)
    budget.release(cost)
