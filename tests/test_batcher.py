"""The inference thread survives requests that give up, and its death fails the health checks.

A fake runtime stands in for the model: what is tested is the thread, the futures and the
probes, not a score. Every wait is bounded; no elapsed time is asserted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flask import Flask

from function.batcher import Batcher
from function.config import Settings
from function.errors import DeadlineExceeded
from function.fetch import Fetcher
from function.metrics import Metrics
from function.model import ModelInfo
from function.pipeline import Pipeline, Source
from function.service import Service
from tests.fakes import flask_app
from tests.photos import photo_jpeg

JPEG = photo_jpeg("coffee", (64, 48), quality=85)
WAIT = 10.0  # the most any step here waits for another thread


class SlowRuntime:
    """Stands in for ``function.model.Model``: each ``predict`` waits until released."""

    ready = True
    info = ModelInfo(name="fake", version="0", sha256="0" * 64, runtime="fake")

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)  # one release per predict call begun
        self.gate = threading.Event()
        self.calls: list[int] = []  # batch sizes, in call order
        self.fail_with: BaseException | None = None

    def predict(self, batch: np.ndarray, *, alone: bool = False) -> np.ndarray:
        self.calls.append(len(batch))
        self.entered.release()
        assert self.gate.wait(WAIT), "the test never released predict"
        if self.fail_with is not None:
            raise self.fail_with
        return np.full(len(batch), 0.25, dtype=np.float32)


def tensors(count: int = 1) -> np.ndarray:
    return np.zeros((count, 224, 224, 3), dtype=np.float32)


@pytest.fixture()
def runtime() -> SlowRuntime:
    return SlowRuntime()


@pytest.fixture()
def batcher(runtime: SlowRuntime) -> Iterator[Batcher]:
    batcher = Batcher(runtime, max_batch=8)  # type: ignore[arg-type]
    batcher.start()
    yield batcher
    runtime.gate.set()
    batcher.stop()


def test_a_deadline_passing_during_predict_does_not_kill_the_thread(
    runtime: SlowRuntime, batcher: Batcher
) -> None:
    settings = Settings()
    fetcher = Fetcher(settings)
    pipeline = Pipeline(settings, runtime, batcher, fetcher, Metrics())  # type: ignore[arg-type]
    try:
        # Predict holds until this request has given up: its future is cancelled while the
        # inference thread is still working on it. (A second is ample for decoding a tiny
        # image first; predict then outlasts the rest for sure.)
        with pytest.raises(DeadlineExceeded):
            pipeline.score(Source(data=JPEG), deadline=time.monotonic() + 1)
        assert runtime.entered.acquire(timeout=WAIT)
        runtime.gate.set()

        result = pipeline.score(Source(data=JPEG), deadline=time.monotonic() + WAIT)
        assert result["score"] == pytest.approx(0.25)
        assert batcher.alive
    finally:
        fetcher.close()


def test_cancelled_requests_are_dropped_before_they_run(
    runtime: SlowRuntime, batcher: Batcher
) -> None:
    first = batcher.submit(tensors(1))
    assert runtime.entered.acquire(timeout=WAIT)  # the thread is busy with ``first``
    gave_up = batcher.submit(tensors(3))
    assert gave_up.cancel()  # what the pipeline does when the request's deadline passes
    runtime.gate.set()
    assert first.result(timeout=WAIT).tolist() == [0.25]
    later = batcher.submit(tensors(2))
    assert later.result(timeout=WAIT).tolist() == [0.25, 0.25]
    assert runtime.calls == [1, 2]  # the cancelled three never reached the model


def test_a_failing_model_fails_its_requests_and_the_next_one_is_served(
    runtime: SlowRuntime, batcher: Batcher
) -> None:
    runtime.fail_with = RuntimeError("runtime fault")
    runtime.gate.set()
    with pytest.raises(RuntimeError, match="runtime fault"):
        batcher.submit(tensors(1)).result(timeout=WAIT)
    runtime.fail_with = None
    assert batcher.submit(tensors(1)).result(timeout=WAIT).tolist() == [0.25]
    assert batcher.alive


def test_an_error_in_the_loop_is_logged_and_the_loop_goes_on(
    runtime: SlowRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    def on_batch(size: int, alone: bool, seconds: float) -> None:
        seen.append(size)
        if len(seen) == 1:
            raise ValueError("metrics fault")

    batcher = Batcher(runtime, on_batch=on_batch)  # type: ignore[arg-type]
    batcher.start()
    runtime.gate.set()
    try:
        assert batcher.submit(tensors(1)).result(timeout=WAIT).tolist() == [0.25]
        assert batcher.submit(tensors(2)).result(timeout=WAIT).tolist() == [0.25, 0.25]
        assert seen == [1, 2]
        assert batcher.alive
    finally:
        batcher.stop()
    assert any(record.message == "inference loop error" for record in caplog.records)


def get(app: Flask, path: str) -> Any:
    return app.test_client().get(path)


# The thread is killed on purpose here; pytest would report its end as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_inference_thread_fails_liveness_and_readiness(runtime: SlowRuntime) -> None:
    service = Service(Settings(), runtime)  # type: ignore[arg-type]
    app = flask_app(service)

    service.batcher.start()
    assert get(app, "/healthz").status_code == 200
    assert get(app, "/readyz").status_code == 200

    # A thread can still end despite the loop's guard (SystemExit is no Exception).
    runtime.fail_with = SystemExit()
    runtime.gate.set()
    service.batcher.submit(tensors(1))
    thread = service.batcher._thread
    assert thread is not None
    thread.join(timeout=WAIT)
    assert not thread.is_alive()

    assert not service.alive
    health = get(app, "/healthz")
    assert health.status_code == 503, health.get_json()
    ready = get(app, "/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["reason"] == "inference thread stopped"
    service.fetcher.close()
