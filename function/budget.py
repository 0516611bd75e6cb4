"""How much memory decodes may hold at once, per pod, and who waits for it.

A decode's cost is known from the image's header before a pixel is decoded (``walk.py``
charges each image's full-size decoded bytes). Concurrent decodes together never hold more
than the budget: one that does not fit waits its turn, first come first served, until its
request's deadline; one that could never fit, even alone, is refused at once.

The budget is derived from the container's memory limit (cgroup v2 ``memory.max``), less
what the process holds besides decodes (runtime, model, bodies in flight): see
``budget_from_limit`` and docs/performance.md's "Memory" section for the measured figures.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from function.errors import ImageTooLarge, Overloaded

MIB = 1 << 20

RESERVED_BYTES = 512 * MIB
"""What the worker holds besides decodes: Python, the runtime and model (~230 MiB resident
once warm), request bodies in flight, the batch's tensors, and headroom for the allocator."""

MIN_BUDGET_BYTES = 64 * MIB
"""The least budget a very small limit leaves: enough for a 12 MP photo to decode."""


def cgroup_memory_limit(path: Path = Path("/sys/fs/cgroup/memory.max")) -> int | None:
    """The container's memory limit in bytes (cgroup v2), or None where there is none."""
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    if raw == "max" or not raw.isdigit():
        return None
    return int(raw)


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def budget_from_limit(limit: int) -> int:
    """The decode budget a memory limit of ``limit`` bytes leaves."""
    return max(limit - RESERVED_BYTES, MIN_BUDGET_BYTES)


def default_budget(override: int | None, cgroup: Path = Path("/sys/fs/cgroup/memory.max")) -> int:
    """``override`` if set, else from the cgroup limit, else from the machine's memory."""
    if override is not None:
        return override
    limit = cgroup_memory_limit(cgroup)
    return budget_from_limit(limit if limit is not None else physical_memory())


class DecodeBudget:
    """A counting budget of bytes with a fair (FIFO) queue and deadlines.

    ``clock`` is injectable for tests; waits use a condition variable, never polling.
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        if limit <= 0:
            raise ValueError("the decode budget must be > 0 bytes")
        self.limit = limit
        self._clock = clock
        self._used = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        with self._changed:
            return self._used

    @property
    def waiting(self) -> int:
        with self._changed:
            return len(self._queue)

    @contextmanager
    def reserve(self, cost: int, deadline: float) -> Iterator[None]:
        """Hold ``cost`` bytes of the budget for the block; wait (until ``deadline``, in
        ``clock``'s time) for earlier holders to finish when it does not fit now."""
        self.acquire(cost, deadline)
        try:
            yield
        finally:
            self.release(cost)

    def acquire(self, cost: int, deadline: float) -> None:
        if cost > self.limit:
            raise ImageTooLarge(
                f"decoding this image needs about {cost // MIB} MiB, more than the "
                f"{self.limit // MIB} MiB this server decodes with"
            )
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self._used + cost > self.limit:
                    remaining = deadline - self._clock()
                    if remaining <= 0:
                        raise Overloaded("too many large images are being decoded; retry")
                    self._changed.wait(remaining)
                self._used += cost
            finally:
                self._queue.remove(ticket)
                # The head may have changed: the next waiter re-checks whether it fits.
                self._changed.notify_all()

    def release(self, cost: int) -> None:
        with self._changed:
            self._used -= cost
            self._changed.notify_all()
