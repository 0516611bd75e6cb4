"""One image's path: fetch → decode → preprocess → predict → result, timed per stage.

The same ``Pipeline`` serves HTTP, CloudEvents and the CLI, so a score is the same number
whichever door it came through.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from function.batcher import Batcher
from function.budget import DecodeBudget, default_budget
from function.config import Settings
from function.decode import Decoded, decode
from function.errors import DeadlineExceeded, FileNotReady, NotReady, UndecodableImage
from function.fetch import Fetcher
from function.metrics import Metrics
from function.model import Model
from function.preprocess import image_to_tensor


@dataclass(frozen=True)
class Source:
    """One image to score: inline bytes, or a URL to fetch."""

    data: bytes | None = None
    url: str | None = None

    @property
    def kind(self) -> str:
        return "url" if self.url is not None else "bytes"


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        model: Model,
        batcher: Batcher,
        fetcher: Fetcher,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.model = model
        self.batcher = batcher
        self.fetcher = fetcher
        self.metrics = metrics
        self.decode_budget = DecodeBudget(default_budget(settings.decode_memory_bytes))
        self._scoring = 0  # requests inside ``score`` right now, across all threads
        self._scoring_lock = threading.Lock()

    @contextmanager
    def _counted(self) -> Iterator[None]:
        with self._scoring_lock:
            self._scoring += 1
        try:
            yield
        finally:
            with self._scoring_lock:
                self._scoring -= 1

    def score(
        self,
        source: Source,
        *,
        mode: str | None = None,
        deadline: float | None = None,
        notes: Callable[[str, Any], None] | None = None,
        expect_sha1: str | None = None,
    ) -> dict[str, Any]:
        """Score one source. ``notes(key, value)`` receives facts worth logging (host, format).
        ``expect_sha1``: score only these bytes (hex SHA-1); other bytes raise ``FileNotReady``
        (``stale_file``) before they are decoded."""
        with self._counted():
            return self._score(source, mode, deadline, notes, expect_sha1)

    def _score(
        self,
        source: Source,
        mode: str | None,
        deadline: float | None,
        notes: Callable[[str, Any], None] | None,
        expect_sha1: str | None,
    ) -> dict[str, Any]:
        mode = mode or self.settings.preprocessing
        deadline = deadline if deadline is not None else time.monotonic() + 3600
        note = notes or (lambda key, value: None)
        timing: dict[str, float] = {}
        note("timing_ms", timing)  # filled in as the stages run, so a failure shows how far
        started = time.perf_counter()

        if source.url is not None:
            # The host alone (a URL may carry a token), noted before the fetch can fail.
            note("source_host", _host(source.url))
            with self._stage("fetch", timing, deadline):
                fetched = self.fetcher.fetch(source.url, deadline=deadline)
            self.metrics.fetched_bytes.inc(len(fetched.data))
            note("source_host", fetched.host)
            data = fetched.data
        else:
            assert source.data is not None
            data = source.data
        if not data:
            raise UndecodableImage("the image is empty (0 bytes)")
        note("image_bytes", len(data))
        digest: str | None = None
        if expect_sha1 is not None:
            # Before decoding: a file still served in its previous version costs a hash, not
            # a decode and a model run, each time the broker retries it.
            digest = hashlib.sha1(data).hexdigest()
            if digest != expect_sha1:
                raise FileNotReady(
                    "the image host still serves another version of the file", code="stale_file"
                )

        with self._stage("decode", timing, deadline):
            decoded = decode(
                data,
                mode=mode,
                max_pixels=self.settings.max_pixels,
                max_frames=self.settings.max_frames,
                budget=self.decode_budget,
                deadline=deadline,
            )
        note("image_format", decoded.format)
        note("image_size", f"{decoded.width}x{decoded.height}")

        with self._stage("preprocess", timing, deadline):
            batch = np.stack([image_to_tensor(frame) for frame in decoded.frames])

        with self._stage("predict", timing, deadline):
            future = self._submit(batch)
            # The result needs the SHA-1 anyway: take it while the model runs on its own
            # thread (hashlib lets go of the GIL), not after.
            sha1 = digest or hashlib.sha1(data).hexdigest()
            frame_scores = self._wait(future, deadline)

        score = float(frame_scores.max())
        self.metrics.scores.observe(score)
        timing["total"] = (time.perf_counter() - started) * 1000
        return self._result(score, frame_scores, decoded, sha1, mode, timing)

    def _submit(self, batch: np.ndarray) -> Future[np.ndarray]:
        if not self.model.ready:
            raise NotReady("the model is still loading")
        # Alone: no other request is being fetched, decoded or scored, so the runtime may
        # spend CPU on this one's latency (see OnnxRuntime) without taking it from another.
        return self.batcher.submit(batch, alone=self._scoring <= 1)

    def _wait(self, future: Future[np.ndarray], deadline: float) -> np.ndarray:
        try:
            return future.result(timeout=max(deadline - time.monotonic(), 0.001))
        except FutureTimeout as exc:
            future.cancel()
            raise DeadlineExceeded("scoring did not finish within the request deadline") from exc

    @contextmanager
    def _stage(self, stage: str, timing: dict[str, float], deadline: float) -> Iterator[None]:
        if time.monotonic() > deadline:
            raise DeadlineExceeded("scoring did not finish within the request deadline")
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            timing[stage] = round(elapsed * 1000, 3)
            self.metrics.stage_seconds.labels(stage).observe(elapsed)

    def _result(
        self,
        score: float,
        frame_scores: np.ndarray,
        decoded: Decoded,
        sha1: str,
        mode: str,
        timing: dict[str, float],
    ) -> dict[str, Any]:
        assert self.model.info is not None
        result: dict[str, Any] = {
            "score": score,
            "model": self.model.info.as_dict(),
            "preprocessing": mode,
            "image": {
                "sha1": sha1,
                # MediaWiki keys files by SHA-1 in base 36 (img_sha1): store scores the same way.
                "sha1_base36": np.base_repr(int(sha1, 16), 36).lower().zfill(31),
                "format": decoded.format,
                "width": decoded.width,
                "height": decoded.height,
                "frames": decoded.frames_total,
                "truncated": decoded.truncated,
            },
            "timing_ms": {key: round(value, 3) for key, value in timing.items()},
        }
        if len(decoded.frame_indices) > 1:
            result["frame_scores"] = [
                {"index": index, "score": float(s)}
                for index, s in zip(decoded.frame_indices, frame_scores, strict=True)
            ]
        return result


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # a malformed URL is the fetcher's to refuse, with its own error
        return None
