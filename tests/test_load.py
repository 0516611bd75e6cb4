"""Overload, soak, drain and deadline against the real server process (gunicorn + the function).

Bounded in request count, never by a time budget, so what they prove does not depend on how
busy the machine is; timeouts are safety nets only, and no elapsed time is asserted. The figures
they measure (requests, statuses, p99, worker RSS) are printed for the report (``pytest -s``).
Every test here runs the real server with the real model.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, running_server
from tests.imagehost import ImageHost
from tests.photos import photo_jpeg

pytestmark = [pytest.mark.slow, pytest.mark.model]

SMALL = photo_jpeg("astronaut", (160, 120), quality=85)
TINY = photo_jpeg("coffee", (64, 48), quality=85)


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """One sample of the server's /metrics (0 when the series does not exist yet)."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def worker_pid(server: ServerProcess) -> int:
    """The gunicorn worker: the child of the server (master) process."""
    master = server.process.pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after the ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == master:
            return int(entry.name)
    raise AssertionError(f"no worker process under {master}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Tally:
    """What a pool of client threads saw; every request ends up in exactly one bucket."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    admitted_seconds: list[float] = field(default_factory=list)
    missing_retry_after: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def p99(self) -> float:
        ordered = sorted(self.admitted_seconds)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def hammer(url: str, body: bytes, threads: int, requests_total: int, timeout: float = 30) -> Tally:
    """``threads`` clients, each with its own keep-alive session, posting ``body`` until
    ``requests_total`` requests have been sent (``timeout`` per request is a safety net)."""
    tally = Tally()
    max_requests = requests_total

    def client() -> None:
        with requests.Session() as session:
            while True:
                with tally.lock:
                    if tally.sent >= max_requests:
                        return
                    tally.sent += 1
                started = time.monotonic()
                try:
                    response = session.post(
                        url, data=body, headers={"Content-Type": "image/jpeg"}, timeout=timeout
                    )
                except requests.RequestException as exc:
                    with tally.lock:
                        tally.errors[type(exc).__name__] += 1
                    continue
                elapsed = time.monotonic() - started
                with tally.lock:
                    tally.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        tally.admitted_seconds.append(elapsed)
                    elif response.status_code == 503 and "Retry-After" not in response.headers:
                        tally.missing_retry_after += 1

    pool = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        # Safety net only: every request ends by its own timeout.
        thread.join(timeout=max_requests * timeout)
    assert not any(thread.is_alive() for thread in pool), "a client thread never finished"
    return tally


def test_overload_sheds_with_503s_and_recovers(tmp_path: Path) -> None:
    with running_server(tmp_path, NSFWOID_MAX_IN_FLIGHT="4") as server:
        requests.post(server.url, data=SMALL, headers={"Content-Type": "image/jpeg"}, timeout=30)
        tally = hammer(server.url, SMALL, threads=24, requests_total=600)
        rejected = metric(server, "nsfwoid_rejected_requests_total", reason="overloaded")
        in_flight = metric(server, "nsfwoid_in_flight_requests")
        ok_counted = metric(server, "nsfwoid_requests_total", input="raw", outcome="ok")
        overloaded_counted = metric(server, "nsfwoid_requests_total", input="raw",
                                    outcome="overloaded")  # fmt: skip
        still_serving = requests.post(
            server.url, data=SMALL, headers={"Content-Type": "image/jpeg"}, timeout=30
        )
    print(
        f"\noverload: sent={tally.sent} answered={tally.answered} statuses={dict(tally.statuses)}"
        f" errors={dict(tally.errors)} p99(200)={tally.p99():.3f}s"
        f" median(200)={statistics.median(tally.admitted_seconds):.3f}s"
        f" rejected_total={rejected:.0f}"
    )
    assert tally.errors == {}
    assert tally.sent == tally.answered == 600
    assert set(tally.statuses) <= {200, 503}, tally.statuses
    assert tally.statuses[200] > 0 and tally.statuses[503] > 0, tally.statuses
    assert tally.missing_retry_after == 0
    # Every 503 was counted as an overload rejection of a raw request (the body is parsed
    # before admission), and every 200 as a scored request
    # (+1: the warm-up request before the load).
    assert rejected == tally.statuses[503]
    assert overloaded_counted == tally.statuses[503]
    assert ok_counted == tally.statuses[200] + 1
    assert in_flight == 0
    assert still_serving.status_code == 200


def test_soak_memory_stays_flat(tmp_path: Path) -> None:
    warmup, total = 200, 1200
    with running_server(tmp_path, NSFWOID_MAX_IN_FLIGHT="8") as server:
        pid = worker_pid(server)
        first = hammer(server.url, TINY, threads=4, requests_total=warmup)
        before = rss_mib(pid)
        started = time.monotonic()
        soak = hammer(server.url, TINY, threads=4, requests_total=total - warmup)
        elapsed = time.monotonic() - started  # printed, never asserted
        after = rss_mib(pid)
        assert worker_pid(server) == pid  # the same worker all along: no restart hid a leak
    done = first.answered + soak.answered
    print(
        f"\nsoak: requests={done} in {elapsed:.1f}s after {first.answered} warm-up,"
        f" statuses={dict(first.statuses + soak.statuses)} errors={dict(soak.errors)}"
        f" worker RSS {before:.1f} MiB -> {after:.1f} MiB ({after - before:+.1f} MiB)"
    )
    assert first.errors == {} and soak.errors == {}
    assert set(first.statuses + soak.statuses) == {200}
    assert done == total  # every request answered, however long the machine took
    assert after - before < 50, f"worker RSS grew {after - before:.1f} MiB"


@pytest.fixture()
def host() -> Iterator[ImageHost]:
    image_host = ImageHost()
    yield image_host
    image_host.close()


def test_sigterm_drains_in_flight_requests_then_exits_0(tmp_path: Path, host: ImageHost) -> None:
    body = photo_jpeg("coffee", (200, 150))
    # ~2 s to send: the request is in flight when SIGTERM arrives, within the fetch deadline.
    url = host.drip("/slow.jpg", body, chunk=max(1, len(body) // 20), interval=0.1)
    # A short drain delay: this test is about the request in flight (see the next one).
    server = ServerProcess(tmp_path / "server.log", NSFWOID_DRAIN_SECONDS="0.5")
    try:
        server.wait_ready()
        result: dict[str, object] = {}

        def slow_request() -> None:
            try:
                response = requests.post(server.url, json={"url": url}, timeout=30)
                result["status"], result["json"] = response.status_code, response.json()
            except requests.RequestException as exc:
                result["error"] = repr(exc)

        thread = threading.Thread(target=slow_request)
        thread.start()
        # In flight: the server is fetching the image (the host signals the hit).
        assert host.reached("/slow.jpg").wait(30), "the slow request never reached the host"
        assert host.hits_for("/slow.jpg") == 1
        sent_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)

        # Readiness goes away at once: 503 while the listener is open, refused once closed.
        # (The signal goes to gunicorn's master, as the kubelet's does to PID 1, and reaches
        # the worker a moment later: a probe in that moment may still get 200.)
        readiness: list[tuple[float, object]] = []
        for _ in range(300):  # polls, bounded in count; the drip ends the request first
            if not thread.is_alive():
                break
            try:
                status: object = requests.get(server.url + "/readyz", timeout=1).status_code
            except requests.RequestException:
                status = "refused"
            readiness.append((time.monotonic() - sent_at, status))
            time.sleep(0.1)
        thread.join(timeout=30)
        code = server.process.wait(timeout=30)
        exited_after = time.monotonic() - sent_at
    finally:
        server.terminate()
    print(f"\nsigterm: result={result.get('status')} readiness={readiness[:5]}..."
          f" exit={code} after {exited_after:.1f}s")  # fmt: skip
    assert result.get("status") == 200, (result, server.logs()[-3000:])
    assert 0 <= result["json"]["score"] <= 1  # type: ignore[index]
    assert readiness and readiness[-1][1] in (503, "refused"), readiness
    assert {status for _, status in readiness} <= {200, 503, "refused"}, readiness
    # 200 only in the moment before the worker hears the signal, never once it has.
    statuses = [status for _, status in readiness]
    went_down = next(i for i, status in enumerate(statuses) if status != 200)
    assert 200 not in statuses[went_down:], readiness
    assert code == 0, server.logs()[-3000:]
    assert '"draining: readiness now 503"' in server.logs()


def test_sigterm_keeps_serving_during_the_drain_delay_then_exits_0(tmp_path: Path) -> None:
    """Readiness is 503 while new connections are still accepted and scored, so that a
    request routed before the endpoints update is served, not refused."""
    server = ServerProcess(tmp_path / "server.log", NSFWOID_DRAIN_SECONDS="5")
    try:
        server.wait_ready()
        server.process.send_signal(signal.SIGTERM)
        # The worker hears the signal a moment after the master: poll until it has. No
        # session: every call opens a new connection, so each proves the port still accepts.
        readiness: list[object] = []
        for _ in range(50):
            try:
                status: object = requests.get(server.url + "/readyz", timeout=2).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
            readiness.append(status)
            if status != 200:
                break
            time.sleep(0.05)
        assert readiness[-1] == 503, (readiness, server.logs()[-3000:])
        scored = requests.post(
            server.url, data=TINY, headers={"Content-Type": "image/jpeg"}, timeout=10
        )
        assert scored.status_code == 200, (scored.text, server.logs()[-3000:])
        assert 0 <= scored.json()["score"] <= 1
        assert requests.get(server.url + "/readyz", timeout=2).status_code == 503
        code = server.process.wait(timeout=60)
    finally:
        server.terminate()
    assert code == 0, server.logs()[-3000:]
    logs = server.logs()
    assert '"draining: readiness now 503"' in logs
    assert logs.index('"draining: readiness now 503"') < logs.index(
        '"drain delay over: no longer accepting requests"'
    )


def test_request_deadline_is_a_counted_504(tmp_path: Path, host: ImageHost) -> None:
    body = photo_jpeg("coffee", (200, 150))
    # 10 s of drip: longer than both the request deadline (1 s) and the fetch deadline (4 s).
    url = host.drip("/slower.jpg", body, chunk=max(1, len(body) // 50), interval=0.2)
    with running_server(tmp_path, NSFWOID_REQUEST_DEADLINE="1") as server:
        started = time.monotonic()
        response = requests.post(server.url, json={"url": url}, timeout=30)
        elapsed = time.monotonic() - started  # printed, never asserted
        code = response.json()["error"]["code"]
        counted = metric(server, "nsfwoid_requests_total", input="json", outcome=code)
        deadline_rejections = metric(server, "nsfwoid_rejected_requests_total", reason="deadline")
    print(f"\ndeadline: {response.status_code} {code} after {elapsed:.2f}s")
    assert response.status_code == 504
    assert response.headers["Content-Type"] == "application/json"
    assert code in ("deadline_exceeded", "source_timeout")
    assert int(response.headers["Retry-After"]) >= 1
    assert counted == 1
    assert deadline_rejections == (1 if code == "deadline_exceeded" else 0)
    assert host.sent["/slower.jpg"] < len(body)  # answered before the host finished sending


def test_request_deadline_bounds_the_fetch(tmp_path: Path, host: ImageHost) -> None:
    body = photo_jpeg("coffee", (200, 150))
    url = host.drip("/slowest.jpg", body, chunk=max(1, len(body) // 50), interval=0.2)
    with running_server(tmp_path, NSFWOID_REQUEST_DEADLINE="1") as server:
        response = requests.post(server.url, json={"url": url}, timeout=30)
        rejected = metric(server, "nsfwoid_rejected_requests_total", reason="deadline")
    # The request's deadline (1 s), not the fetch's (4 s), ended the fetch: the error says
    # which, and the host had not finished its drip when the server stopped reading.
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    assert rejected == 1
    assert host.sent["/slowest.jpg"] < len(body)


def test_worker_pid_is_the_gunicorn_worker(server: ServerProcess) -> None:
    pid = worker_pid(server)
    assert pid != server.process.pid
    assert "function.serve" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
    assert os.getpgid(pid) >= 0
