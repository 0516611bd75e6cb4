"""function/allocator.py: a request's buffers are reused, not faulted in again; large blocks
still go back to the system when freed.

Each case runs in a fresh interpreter, so the settings never leak into the test process, and
counts what the kernel reports (minor page faults, resident memory) rather than time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_WORKER = r"""
import json, resource, sys, threading
sys.path.insert(0, sys.argv[1])
from function.allocator import configure_allocator
configured = configure_allocator() if sys.argv[2] == "configured" else None

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

found = {"configured": configured}

def request_like():
    # What a request thread does with a 3 MB upload: a body, a copy, and buffers freed as the
    # request ends; then the next request the same again.
    def one():
        body = bytearray(3 << 20)
        body[::4096] = b"x" * len(body[::4096])
        copy = bytes(body)
        del body, copy
    one()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        one()
    found["faults_after_first"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    baseline = rss_kib()
    image = bytearray(48 << 20)  # a decoded image's size, far above the mmap threshold
    image[::4096] = b"x" * len(image[::4096])
    found["rss_with_image_kib"] = rss_kib() - baseline
    del image
    found["rss_after_image_kib"] = rss_kib() - baseline

thread = threading.Thread(target=request_like)  # request threads allocate in their own arena
thread.start()
thread.join()
print(json.dumps(found))
"""


def run_worker(variant: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(ROOT), variant],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, int] = json.loads(done.stdout)
    return found


@pytest.fixture(scope="module")
def configured() -> dict[str, int]:
    found = run_worker("configured")
    if not found["configured"]:
        pytest.skip("the C library is not glibc: the allocator settings do not apply")
    return found


def test_repeated_request_buffers_are_not_faulted_in_again(configured: dict[str, int]) -> None:
    # Ten more requests of 2 × 3 MiB would touch ~15,000 fresh pages if each freed buffer went
    # back to the system (glibc's 128 KiB trim threshold with a fixed mmap threshold).
    assert configured["faults_after_first"] < 1000, configured


def test_a_decoded_image_sized_block_goes_back_when_freed(configured: dict[str, int]) -> None:
    assert configured["rss_with_image_kib"] > 40 * 1024, configured  # it was really resident
    assert configured["rss_after_image_kib"] < 4 * 1024, configured
