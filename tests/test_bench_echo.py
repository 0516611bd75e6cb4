"""bench/echo.py, the HTTP floor of the classes phase: a real server process that reads the
whole body it is sent and says how much arrived, on every path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ours import Client, ServerProcess


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    log = Path(tmp_path_factory.mktemp("echo")) / "echo.log"
    with ServerProcess({}, log, "bench.echo") as server:
        server.wait_ready(timeout=60)
        client = Client(server.port, timeout=30)
        try:
            yield client
        finally:
            client.close()


def test_reads_the_whole_body(echo: Client) -> None:
    body = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MB, as a 12 MP upload
    status, answer = echo.request("POST", "/", body, "image/jpeg")
    assert status == 200
    assert json.loads(answer) == {"bytes": len(body)}


def test_answers_without_a_body(echo: Client) -> None:
    status, answer = echo.request("GET", "/readyz")
    assert (status, json.loads(answer)) == (200, {"bytes": 0})
