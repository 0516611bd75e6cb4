"""Podman, the image build and loopback helpers for tests/test_container.py.

Everything follows ../shared/CONTAINERS.md: runc with cgroupfs (crun fails in this sandbox),
explicit ulimits, a Debian bookworm stand-in base made with debootstrap when no registry can be
reached, the machine's CA bundle mounted into the build so pip reaches the package index, and
``--network=host`` with 127.0.0.1 only.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager=cgroupfs")
LIMITS = ("--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096")
STAND_IN_BASE = "localhost/debian-python:bookworm"
# The image under test; CONTAINER_BASE_IMAGE picks another base (e.g. python:3.11-slim where a
# registry is reachable).
IMAGE = "localhost/nsfwoid:test"
BASE_IMAGE = os.environ.get("CONTAINER_BASE_IMAGE", STAND_IN_BASE)
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
BUILD_TIMEOUT = 40 * 60
TOOLS = ("podman", "runc", "debootstrap")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


def ensure_tools() -> None:
    """podman, runc and debootstrap: installed with apt in CI as root, else a clear skip."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not missing:
        return
    if not os.environ.get("CI") or os.geteuid() != 0:
        pytest.skip(
            f"{', '.join(missing)} not installed; as root: apt-get install -y podman runc "
            "debootstrap (CI installs them itself), see ../shared/CONTAINERS.md"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, timeout=600, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *TOOLS],
        check=True,
        timeout=900,
        env=env,
    )


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def debian_mirror() -> str:
    if APT_SOURCES.is_file():
        for line in APT_SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def ensure_base_image() -> None:
    """The Debian bookworm stand-in for python:3.11-slim (about 45 s), unless it exists."""
    if BASE_IMAGE != STAND_IN_BASE or image_exists(STAND_IN_BASE):
        return
    if os.geteuid() != 0:
        pytest.skip(f"{STAND_IN_BASE} is missing and debootstrap needs root to build it")
    with tempfile.TemporaryDirectory(prefix="nsfwoid-rootfs-") as rootfs:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                rootfs,
                debian_mirror(),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        try:
            subprocess.run(
                [*PODMAN, "import", "-", STAND_IN_BASE],
                stdin=tar.stdout,
                check=True,
                capture_output=True,
                timeout=600,
            )
        finally:
            assert tar.stdout is not None
            tar.stdout.close()
            tar.wait(timeout=60)


def build_image(tag: str = IMAGE) -> float:
    """``podman build`` of the repository's Containerfile; returns the seconds it took."""
    args = [*PODMAN, "build", "--network=host", *LIMITS, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    if CA_BUNDLE.is_file():  # the trust store that lets pip reach the index from the build
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    args += ["-f", str(REPO / "Containerfile"), "-t", tag, str(REPO)]
    started = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"podman build failed ({result.returncode}):\n{tail}")
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Container:
    name: str
    port: int
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> tuple[str, int]:
        out = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name)
        status, code = out.stdout.split()
        return status, int(code)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-8000:]


@contextmanager
def run_container(image: str, env: dict[str, str], prefix: str = "nsfwoid-test") -> Iterator:
    """Run the image as a Knative revision would (host network, $PORT, K_*); always removed."""
    port = free_port()
    name = f"{prefix}-{os.getpid()}-{port}"
    knative = {
        "PORT": str(port),
        "K_SERVICE": "nsfwoid",
        "K_REVISION": "nsfwoid-00001",
        "K_CONFIGURATION": "nsfwoid",
    }
    args = ["run", "-d", "--name", name, "--network=host", *LIMITS]
    for key, value in {**knative, **env}.items():
        args += ["-e", f"{key}={value}"]
    container = Container(name=name, port=port)
    try:
        podman(*args, image)
        yield container
    finally:
        podman("rm", "--force", "--time", "0", name, check=False, timeout=60)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ImageHost

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.server.started.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        drip = self.path.startswith("/slow/")
        chunks = 20 if drip else 1
        size = -(-len(body) // chunks)
        for start in range(0, len(body), size):
            if drip:
                time.sleep(self.server.drip_seconds / chunks)
            self.wfile.write(body[start : start + size])
            self.wfile.flush()
        self.server.served.append(self.path)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class ImageHost(http.server.ThreadingHTTPServer):
    """Serves JPEGs on 127.0.0.1; ``/slow/...`` drips the body over ``drip_seconds``."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes], drip_seconds: float = 2.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.drip_seconds = drip_seconds
        self.started: list[str] = []  # paths whose response has begun
        self.served: list[str] = []  # paths whose body was sent in full

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def image_host(files: dict[str, bytes], drip_seconds: float = 2.0) -> Iterator[ImageHost]:
    server = ImageHost(files, drip_seconds)
    thread = threading.Thread(target=server.serve_forever, name="image-host", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
