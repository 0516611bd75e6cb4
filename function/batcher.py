"""Micro-batching: one inference thread owns the model; request threads hand it tensors.

Requests decode and preprocess on their own threads (Pillow releases the GIL), so decoding
one image overlaps inference of another. Whatever is queued when the model frees up runs
as one batch (up to ``max_batch`` images): under load batches form by themselves, and a
lone request never waits for company unless ``max_wait`` asks it to.

A request whose deadline passes cancels its future; the inference thread drops such items
before running them and never lets resolving a future (or anything else in its loop) end
it, because every later request depends on this one thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from function.model import Batch, Model, Scores


@dataclass
class _Item:
    tensors: Batch
    alone: bool
    future: Future[Scores] = field(default_factory=Future)


_STOP = object()
logger = logging.getLogger("nsfwoid")


def _resolve(future: Future[Scores], outcome: Scores | BaseException) -> None:
    """Set a result or an error; a future already cancelled or resolved is left as it is."""
    try:
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
    except InvalidStateError:
        pass  # its request gave up waiting (deadline): nobody reads this answer


class Batcher:
    def __init__(
        self,
        model: Model,
        *,
        max_batch: int = 8,
        max_wait: float = 0.0,
        on_batch: Callable[[int, bool, float], None] | None = None,
    ) -> None:
        self._model = model
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nsfwoid-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def alive(self) -> bool:
        """False only when the inference thread was started and has ended without ``stop``."""
        thread = self._thread
        return thread is None or thread.is_alive()

    def submit(self, tensors: Batch, *, alone: bool = False) -> Future[Scores]:
        """Queue ``[k, 224, 224, 3]`` tensors; the future resolves to their ``k`` scores.

        ``alone``: the caller saw no other request in flight (see ``Model.predict``)."""
        item = _Item(tensors, alone)
        self._queue.put(item)
        return item.future

    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        items, size = [first], len(first.tensors)
        deadline = time.monotonic() + self._max_wait
        while size < self._max_batch:
            remaining = deadline - time.monotonic()
            try:
                nxt = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if nxt is _STOP:
                return items, True
            assert isinstance(nxt, _Item)
            items.append(nxt)
            size += len(nxt.tensors)
        return items, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            assert isinstance(first, _Item)
            items: list[_Item] = [first]
            stopping = False
            try:
                items, stopping = self._collect(first)
                # Marks the rest running, so a deadline passing from here on cannot cancel
                # them; the cancelled ones are never predicted.
                live = [item for item in items if item.future.set_running_or_notify_cancel()]
                if live:
                    self._predict(live)
            except Exception as exc:  # a bug here must not end the thread every request needs
                logger.exception("inference loop error", extra={"fields": {"outcome": "error"}})
                for item in items:
                    _resolve(item.future, exc)
            if stopping:
                return

    def _predict(self, items: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            batch = (
                items[0].tensors
                if len(items) == 1
                else np.concatenate([item.tensors for item in items])
            )
            alone = len(items) == 1 and items[0].alone
            scores = self._model.predict(batch, alone=alone)
        except Exception as exc:  # hand any model failure to every waiting request
            for item in items:
                _resolve(item.future, exc)
            return
        offset = 0
        for item in items:
            count = len(item.tensors)
            _resolve(item.future, scores[offset : offset + count])
            offset += count
        if self._on_batch is not None:  # after the answers: a metrics fault delays no one
            self._on_batch(len(batch), alone, time.perf_counter() - started)
