"""The container image, built with podman and run the way a Knative revision runs it.

Builds ./Containerfile (the build reaches PyPI for dependencies and the pinned open_nsfw
sources), then runs the image on the host network with ``$PORT`` and ``K_*`` set, scores a real
photo by bytes, by URL from a loopback image host and as a CloudEvent, and stops it with SIGTERM
while a slow request is in flight: the request must finish and the process must exit 0 before
the grace period. The running container needs no network beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

from tests import servicechecker
from tests.container_support import (
    IMAGE,
    LIMITS,
    REPO,
    Container,
    build_image,
    ensure_base_image,
    ensure_tools,
    image_host,
    podman,
    run_container,
)
from tests.photos import photo_jpeg

# The build alone can take minutes on a cold machine: never let a global per-test timeout cut it.
pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(3600)]

READY_TIMEOUT = 120.0
# Knative gives a pod terminationGracePeriodSeconds = the revision's timeoutSeconds (60 s).
GRACE_SECONDS = 60
DRIP_SECONDS = 2.0
CMD = ["/opt/venv/bin/python", "-m", "function.serve"]
LOOPBACK_FETCHES = {"NSFWOID_ALLOW_PRIVATE_NETWORKS": "true"}
HOST_MANIFEST = REPO / "model" / "manifest.json"


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A measurement on the terminal whatever the capture mode (and in the captured output)."""
    print(line)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"[container] {line}")


def sample_jpeg() -> bytes:
    """A real photo (scikit-image's astronaut) as an upload-like JPEG."""
    return photo_jpeg("astronaut")


@pytest.fixture(scope="module")
def image(request: pytest.FixtureRequest) -> str:
    ensure_tools()
    ensure_base_image()
    seconds = build_image(IMAGE)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
    report(request, f"image {IMAGE}: built in {seconds:.1f} s, {size / 1e6:.1f} MB")
    return IMAGE


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return sample_jpeg()


def wait_ready(container: Container, session: requests.Session) -> float:
    """Seconds from ``podman run`` to /readyz 200; fails early if the container dies."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with session.get(container.url + "/readyz", timeout=1) as response:
                if response.status_code == 200:
                    return time.monotonic() - container.started
                assert response.status_code == 503, response.text
        except requests.ConnectionError:
            pass
        status, code = container.state()
        if status != "running":
            pytest.fail(f"container {status} (exit {code}) before ready:\n{container.logs()}")
        time.sleep(0.05)
    pytest.fail(f"/readyz not 200 within {READY_TIMEOUT} s:\n{container.logs()}")


def score_bytes(session: requests.Session, container: Container, jpeg: bytes) -> dict[str, Any]:
    with session.post(
        container.url + "/", data=jpeg, headers={"Content-Type": "image/jpeg"}, timeout=60
    ) as response:
        assert response.status_code == 200, response.text
        result = response.json()
    assert isinstance(result, dict)
    return result


def score_url(session: requests.Session, container: Container, url: str) -> dict[str, Any]:
    with session.post(container.url + "/", json={"url": url}, timeout=60) as response:
        assert response.status_code == 200, response.text
        result = response.json()
    assert isinstance(result, dict)
    return result


def test_image_is_a_small_non_root_runtime(image: str) -> None:
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == CMD  # exec form: gunicorn's master is PID 1 and gets SIGTERM
    assert config["StopSignal"] == "SIGTERM"
    assert "8080/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PORT"] == "8080"
    assert env["NSFWOID_MODEL_DIR"] == "/app/model"

    # Inside the image, without any network: the runtime is complete and holds nothing else.
    probe = (
        "import importlib.util as u, json, os, pathlib, shutil\n"
        "import function.serve\n"
        "print(json.dumps({\n"
        "  'uid': os.getuid(),\n"
        "  'absent_modules': [m for m in ('tensorflow', 'keras', 'pip', 'ai_edge_litert',\n"
        "                                 'onnxruntime') if u.find_spec(m) is None],\n"
        "  'compilers': [c for c in ('gcc', 'cc', 'g++', 'make') if shutil.which(c)],\n"
        "  'model': sorted(p.name for p in pathlib.Path('/app/model').iterdir()),\n"
        "  'pip_caches': [p for p in ('/root/.cache/pip', '/nonexistent/.cache/pip')\n"
        "                 if os.path.exists(p)],\n"
        "  'openapi_prerendered': json.loads(pathlib.Path('/app/function/openapi.json')\n"
        "      .read_text()) == __import__('yaml').safe_load(\n"
        "      pathlib.Path('/app/function/openapi.yaml').read_text()),\n"
        "}))\n"
    )
    result = podman(
        "run", "--rm", "--network=none", *LIMITS, image, "/opt/venv/bin/python", "-c", probe
    )
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts == {
        "uid": 10001,
        "absent_modules": ["tensorflow", "keras", "pip", "ai_edge_litert"],
        "compilers": [],
        "model": ["manifest.json", "open_nsfw.onnx"],
        "pip_caches": [],
        "openapi_prerendered": True,
    }


def test_serves_like_a_knative_revision(
    image: str, jpeg: bytes, request: pytest.FixtureRequest
) -> None:
    files = {"/photo.jpg": jpeg}
    with (
        image_host(files) as host,
        run_container(image, LOOPBACK_FETCHES) as container,
        requests.Session() as session,
    ):
        ready = wait_ready(container, session)
        by_bytes = score_bytes(session, container, jpeg)
        first_score = time.monotonic() - container.started
        report(
            request,
            f"cold start: podman run → /readyz 200 in {ready:.2f} s, "
            f"→ first score in {first_score:.2f} s",
        )

        # The conversion is deterministic: the image serves the very ONNX export that
        # `make model` built and verified on the host (with the parity against the independent
        # ONNX conversion, which the image build cannot run).
        with session.get(container.url + "/readyz", timeout=5) as response:
            served_sha256 = response.json()["model"]["sha256"]
        if HOST_MANIFEST.is_file():
            built_here = json.loads(HOST_MANIFEST.read_text())["artifacts"]["onnx"]["sha256"]
            assert served_sha256 == built_here

        score = by_bytes["score"]
        assert isinstance(score, float)
        assert 0.0 <= score <= 1.0

        url = host.base_url + "/photo.jpg"
        by_url = score_url(session, container, url)
        assert by_url["score"] == pytest.approx(score, abs=1e-6)
        assert host.served == ["/photo.jpg"]

        # The form post of the old open_nsfw services: a bare float as text.
        with session.post(container.url + "/", data={"url": url}, timeout=60) as response:
            assert response.status_code == 200, response.text
            assert float(response.text) == pytest.approx(score, abs=1e-6)

        # A Trigger's delivery: a binary-mode CloudEvent in, the scored CloudEvent back as the
        # reply, its source naming the Knative service and revision from K_SERVICE/K_REVISION.
        headers = {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "upload-1",
            "ce-source": "/uploads",
            "ce-type": "org.nsfwoid.image.uploaded",
        }
        with session.post(
            container.url + "/", data=json.dumps({"url": url}), headers=headers, timeout=60
        ) as response:
            assert response.status_code == 200, response.text
            assert response.headers["ce-type"] == "org.nsfwoid.image.scored"
            assert response.headers["ce-source"] == "/nsfwoid/nsfwoid-00001"
            assert response.json()["score"] == pytest.approx(score, abs=1e-6)

        with session.get(container.url + "/healthz", timeout=5) as response:
            assert response.status_code == 200
        with session.get(container.url + "/metrics", timeout=5) as response:
            assert response.status_code == 200
            assert "# TYPE" in response.text

        # Wikimedia's monitoring and `helm test`: service-checker, by its rules, against the
        # image as it will run (the spec at /?spec, every x-ample, no egress).
        checked = servicechecker.run("127.0.0.1", container.url, timeout=5)
        assert (checked.code, checked.output) == (0, "All endpoints are healthy"), checked.output


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(
    image: str, jpeg: bytes, request: pytest.FixtureRequest
) -> None:
    files = {"/photo.jpg": jpeg, "/slow/photo.jpg": jpeg}
    outcome: dict[str, Any] = {}

    with (
        image_host(files, drip_seconds=DRIP_SECONDS) as host,
        run_container(image, LOOPBACK_FETCHES) as container,
        requests.Session() as session,
    ):
        wait_ready(container, session)
        expected = score_bytes(session, container, jpeg)["score"]

        def slow_request() -> None:
            try:
                with requests.post(
                    container.url + "/", json={"url": host.base_url + "/slow/photo.jpg"}, timeout=60
                ) as response:
                    outcome["status"] = response.status_code
                    outcome["body"] = response.text
            except requests.RequestException as exc:  # reported by the assertions below
                outcome["error"] = repr(exc)

        client = threading.Thread(target=slow_request, name="slow-client", daemon=True)
        client.start()
        # SIGTERM only once the function is inside the fetch (the host has begun to drip).
        in_flight_by = time.monotonic() + 30
        while "/slow/photo.jpg" not in host.started and time.monotonic() < in_flight_by:
            time.sleep(0.02)
        assert "/slow/photo.jpg" in host.started, "the slow fetch never started"

        stopping = time.monotonic()
        podman("stop", "--time", str(GRACE_SECONDS), container.name, timeout=GRACE_SECONDS + 30)
        stopped_after = time.monotonic() - stopping
        client.join(timeout=60)
        assert not client.is_alive()

        status, exit_code = container.state()
        report(
            request,
            f"SIGTERM with a request in flight: exited {exit_code} in {stopped_after:.2f} s",
        )
        logs = container.logs()
        assert outcome.get("status") == 200, f"{outcome}\n{logs}"
        assert json.loads(outcome["body"])["score"] == pytest.approx(expected, abs=1e-6)
        assert status == "exited"
        # 0, not 137: it drained and exited by itself, before the grace period's SIGKILL.
        assert exit_code == 0, logs


def test_the_ssrf_guard_is_active_in_the_image(image: str, jpeg: bytes) -> None:
    # The image's defaults, nothing loosened: a URL on a private address is refused before any
    # connection (the loopback host sees no request), while the same bytes posted score.
    with (
        image_host({"/photo.jpg": jpeg}) as host,
        run_container(image, {}) as container,
        requests.Session() as session,
    ):
        wait_ready(container, session)
        with session.post(
            container.url + "/", json={"url": host.base_url + "/photo.jpg"}, timeout=60
        ) as response:
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "source_not_allowed"
        assert host.started == []
        score_bytes(session, container, jpeg)
