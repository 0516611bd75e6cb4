"""A stand-in model and an in-process app around it, for tests whose point is not the score.

The stand-in runs the real ``Model`` life cycle (load → warm up → ready, a lock around
predict) over a runtime that returns a number derived from the tensor, optionally held at a
gate so a test decides when inference finishes. Everything else (settings, admission, doors,
pipeline, batcher, fetcher, decoder) is the real code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import flask
import numpy as np

from function.app import App
from function.config import Settings
from function.model import Batch, Model, ModelInfo, Scores
from function.service import Service

TEST_SETTINGS = {"allow_private_networks": True, "fetch_deadline": 4.0}


class FakeRuntime:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()  # open: predict returns at once
        self.calls = 0

    def predict(self, batch: Batch, alone: bool) -> Scores:
        self.calls += 1
        self.gate.wait(timeout=60)
        return (1 / (1 + np.exp(-batch.mean(axis=(1, 2, 3)) / 64))).astype(np.float32)


class FakeModel(Model):
    def __init__(self, runtime: FakeRuntime | None = None) -> None:
        super().__init__(Path("/nonexistent"), "fake")
        self.runtime = runtime or FakeRuntime()

    def load(self) -> None:
        self._runtime = self.runtime
        self.info = ModelInfo("fake", "0", "0" * 64, "fake")


def fake_service(**settings: object) -> Service:
    service = Service(Settings(**{**TEST_SETTINGS, **settings}), FakeModel())  # type: ignore[arg-type]
    service.start(wait=True)
    assert service.ready, service.load_error
    return service


def flask_app(service: Service) -> flask.Flask:
    """The function's ``App`` on a bare Flask app (as functions-framework mounts it)."""
    app = flask.Flask("nsfwoid-test")
    handler = App(service)
    methods = ["GET", "HEAD", "POST", "OPTIONS", "PUT", "PATCH", "DELETE"]

    def view(path: str = "") -> flask.Response:
        return handler(flask.request)

    app.add_url_rule("/", "root", view, methods=methods)
    app.add_url_rule("/<path:path>", "any", view, methods=methods)
    return app


@contextmanager
def fake_app(**settings: object) -> Iterator[tuple[flask.Flask, Service]]:
    service = fake_service(**settings)
    try:
        yield flask_app(service), service
    finally:
        service.stop()
