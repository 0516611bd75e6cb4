"""Our side: ``python -m function.serve`` as a real process, a light HTTP client, /proc memory."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]


class ServerError(RuntimeError):
    """Our server did not start, answered an error, or died."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of ``pid`` in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key.lower() + "_kb"] = int(value.split()[0])
    return found


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (gunicorn's master → its worker)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Field 4 is the parent pid; the command name (field 2) may hold spaces, so split
        # after its closing parenthesis.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all its threads) from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Client:
    """One keep-alive HTTP/1.1 connection, as a real client (or Knative's queue-proxy) keeps.

    http.client rather than requests: the client shares the 2 cores with the server, and its
    per-request CPU should be as small as a real, remote caller's share of this machine.
    """

    def __init__(self, port: int, timeout: float = 60) -> None:
        self.port = port
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout
                )
            try:
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError) as exc:
                # The server closed an idle keep-alive connection: reconnect once.
                self.close()
                if attempt == 2:
                    raise ServerError(f"{method} {path}: {exc}") from exc
        raise AssertionError("unreachable")

    def score(self, data: bytes, content_type: str = "image/jpeg") -> dict[str, Any]:
        status, body = self.request("POST", "/", data, content_type)
        if status != 200:
            raise ServerError(f"POST / answered {status}: {body[:300]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ServerProcess:
    """A server process, its start timed from ``Popen``: by default our function served the
    production way (``function.serve``); the classes phase also runs ``bench.echo``."""

    def __init__(self, env: dict[str, str], log_path: Path, module: str = "function.serve") -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", module],
            cwd=ROOT,
            env={**os.environ, **env, "PORT": str(self.port)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.ready_s = float("nan")

    def wait_ready(self, timeout: float = 60, poll: float = 0.01) -> float:
        """Seconds from process start until GET /readyz answers 200."""
        deadline = time.perf_counter() + timeout
        probe = Client(self.port, timeout=2)
        try:
            while time.perf_counter() < deadline:
                if self.process.poll() is not None:
                    raise ServerError(
                        f"server exited with {self.process.returncode}; see {self.log_path}"
                    )
                try:
                    status, _ = probe.request("GET", "/readyz")
                    if status == 200:
                        self.ready_s = time.perf_counter() - self.started
                        return self.ready_s
                except (ServerError, OSError):
                    probe.close()
                time.sleep(poll)
        finally:
            probe.close()
        raise ServerError(f"not ready within {timeout}s; see {self.log_path}")

    def worker_pid(self) -> int:
        workers = children(self.process.pid)
        if len(workers) != 1:
            raise ServerError(f"expected one gunicorn worker, found {workers}")
        return workers[0]

    def memory(self) -> dict[str, int]:
        """The worker's memory (where the model lives) and the master's resident set."""
        worker = memory_kb(self.worker_pid())
        master = memory_kb(self.process.pid)
        return {**worker, "master_vmrss_kb": master["vmrss_kb"]}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
