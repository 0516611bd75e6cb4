"""Shared fixtures: the real model, the function in process and as a real server, an image host.

Everything runs on 127.0.0.1. URL fetches to loopback need NSFWOID_ALLOW_PRIVATE_NETWORKS,
which the test apps turn on explicitly (tests of the guard build their own settings).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from tests.imagehost import ImageHost

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "model"
TEST_ENV = {
    "NSFWOID_ALLOW_PRIVATE_NETWORKS": "true",
    "NSFWOID_FETCH_DEADLINE": "4",
    "NSFWOID_FETCH_READ_TIMEOUT": "2",
    "NSFWOID_FETCH_CONNECT_TIMEOUT": "2",
}


MODEL_FIXTURES = frozenset(
    {
        "built_model",
        "app",
        "client",
        "server",
        "score_bytes",
        # Modules' own apps and servers over the real model.
        "knative_app",  # test_events
        "guarded",  # test_hostile_inputs
        "permissive",  # test_hostile_inputs
        "capped_server",  # test_hostile_inputs
        "tight_app",  # test_openapi
        "fuzz_app",  # test_openapi
    }
)
"""Fixtures that need the real model: a test using any of them (directly or through another
fixture) is marked ``model`` and left out of ``make test-unit``. A test that starts the real
model in its body (``start_app``, ``running_server``) carries ``@pytest.mark.model`` itself:
with ``NSFWOID_TESTS_WITHOUT_MODEL=1`` an unmarked one fails instead of building the model."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.model)


def ensure_model() -> Path:
    """The real model, built by convert/ if this checkout has none yet (about 3 minutes)."""
    if not (MODEL_DIR / "manifest.json").is_file() or not (MODEL_DIR / "open_nsfw.onnx").is_file():
        if os.environ.get("NSFWOID_TESTS_WITHOUT_MODEL"):
            pytest.fail("this test needs the model: use a fixture of MODEL_FIXTURES or mark it")
        subprocess.run([sys.executable, "-m", "convert"], cwd=ROOT, check=True)
    return MODEL_DIR


@pytest.fixture(scope="session")
def built_model() -> Path:
    return ensure_model()


def make_app(**env: str) -> Flask:
    """functions-framework's real app for function/main.py, built with the given settings."""
    import functions_framework

    with mock.patch.dict(os.environ, {**TEST_ENV, **env}):
        app = functions_framework.create_app("score", str(ROOT / "function" / "main.py"), "http")
    assert isinstance(app, Flask)
    return app


def start_app(app: Flask) -> Flask:
    ensure_model()
    service = app.extensions["nsfwoid"]
    service.start(wait=True)
    assert service.ready, service.load_error
    return app


@pytest.fixture(scope="session")
def app(built_model: Path) -> Iterator[Flask]:
    """The function in process, model loaded and warmed up (shared by the whole run)."""
    application = start_app(make_app())
    yield application
    application.extensions["nsfwoid"].stop()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture(scope="session")
def image_host() -> Iterator[ImageHost]:
    host = ImageHost()
    yield host
    host.close()


@pytest.fixture(scope="session")
def upload_app(built_model: Path, image_host: ImageHost) -> Iterator[Flask]:
    """The function in process, model loaded, with Wikimedia's upload URLs pointed at the
    loopback image host (``NSFWOID_UPLOAD_BASE_URL``)."""
    application = start_app(make_app(NSFWOID_UPLOAD_BASE_URL=image_host.url("")))
    yield application
    application.extensions["nsfwoid"].stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m function.serve`` as a real process on 127.0.0.1, logs captured to a file."""

    def __init__(self, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "function.serve"],
            cwd=ROOT,
            env={**os.environ, **TEST_ENV, "PORT": str(self.port), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-4000:]
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - self.started_at
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"server not ready in {timeout}s:\n{self.log_path.read_text()[-4000:]}"
        )

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(tmp_path: Path, **env: str) -> Iterator[ServerProcess]:
    ensure_model()
    server = ServerProcess(tmp_path / "server.log", **env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.terminate()


@pytest.fixture(scope="session")
def server(built_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server process shared by the tests that only need to talk to it."""
    with running_server(tmp_path_factory.mktemp("server")) as process:
        yield process


@pytest.fixture()
def score_bytes(client: FlaskClient) -> Callable[..., Any]:
    def post(data: bytes, content_type: str = "image/jpeg", **kwargs: Any) -> Any:
        return client.post("/", data=data, content_type=content_type, **kwargs)

    return post
