"""``python -m function``: one JSON line per input, the same scores as the service."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from flask.testing import FlaskClient

from tests.conftest import ROOT
from tests.imagehost import ImageHost
from tests.photos import PHOTOS, photo_bytes

pytestmark = pytest.mark.model  # the CLI loads the real model in its own process


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "function", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_scores_paths_and_urls_like_the_service(
    client: FlaskClient, image_host: ImageHost
) -> None:
    url = image_host.file("/cli/coffee.png", photo_bytes("coffee"), content_type="image/png")
    done = run_cli(
        str(PHOTOS["astronaut"]),
        url,
        "--preprocessing",
        "reference",
        NSFWOID_ALLOW_PRIVATE_NETWORKS="true",
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["source"] for line in lines] == [str(PHOTOS["astronaut"]), url]
    for line, name in zip(lines, ("astronaut", "coffee"), strict=True):
        served = client.post(
            "/?preprocessing=reference", data=photo_bytes(name), content_type="image/png"
        ).get_json()
        assert line["score"] == served["score"] and line["preprocessing"] == "reference"
        assert line["image"]["sha1"] == served["image"]["sha1"]


def test_cli_exit_status_reports_failures(tmp_path: object) -> None:
    bogus = os.path.join(str(tmp_path), "not-an-image.txt")
    with open(bogus, "w") as handle:
        handle.write("hello")
    done = run_cli(
        str(PHOTOS["chelsea"]),
        bogus,
        os.path.join(str(tmp_path), "missing.jpg"),
        "http://127.0.0.1:9/x.jpg",
    )
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert "score" in lines[0]
    assert lines[1]["error"]["code"] == "unsupported_media_type"
    assert lines[2]["error"]["code"] == "unreadable_file"
    assert lines[3]["error"]["code"] == "source_not_allowed"  # private networks off by default
    assert "Traceback" not in done.stderr
