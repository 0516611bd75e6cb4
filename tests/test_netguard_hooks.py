"""The guard refuses to start on an urllib3 whose internals it can no longer hook.

The connect-time guard replaces urllib3 internals (``HTTPConnection._new_conn``, a pool's
``ConnectionCls``, a pool manager's ``pool_classes_by_scheme``). An urllib3 that renamed or
stopped using one would not fail: fetches would simply go around the guard. These tests break
each hook the way a changed urllib3 would and check that the import-time check names it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

from function.netguard import GuardUnavailable, verify_urllib3_hooks
from tests.container_support import REPO


def test_the_installed_urllib3_passes() -> None:
    verify_urllib3_hooks()


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (HTTPConnection, "_new_conn"),
        (HTTPConnectionPool, "ConnectionCls"),
        (PoolManager, "_new_pool"),
    ],
)
def test_a_missing_hook_is_named(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
    monkeypatch.delattr(owner, name)
    with pytest.raises(GuardUnavailable, match=f"{owner.__name__}.{name}"):
        verify_urllib3_hooks()


def test_a_connection_without_dns_host_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    original = HTTPConnection.__init__

    def init(self: HTTPConnection, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        del self.__dict__["_dns_host"]

    monkeypatch.setattr(HTTPConnection, "__init__", init)
    with pytest.raises(GuardUnavailable, match="HTTPConnection._dns_host"):
        verify_urllib3_hooks()


def test_a_pool_manager_that_ignores_our_pool_classes_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every attribute still exists, but new pools no longer come from pool_classes_by_scheme.
    def new_pool(self: PoolManager, scheme: str, host: str, port: int, request_context=None):
        pool_cls = HTTPSConnectionPool if scheme == "https" else HTTPConnectionPool
        return pool_cls(host, port)

    monkeypatch.setattr(PoolManager, "_new_pool", new_pool)
    with pytest.raises(GuardUnavailable, match="connect"):
        verify_urllib3_hooks()


def test_a_connection_that_no_longer_calls_new_conn_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # connect() opening its socket some other way would skip the guarded _new_conn.
    def connect(self: HTTPConnection) -> None:
        self.sock = None

    monkeypatch.setattr(HTTPConnection, "connect", connect)
    with pytest.raises(GuardUnavailable, match="not refused"):
        verify_urllib3_hooks()


def test_the_service_does_not_start_without_the_guard() -> None:
    # A fresh interpreter whose urllib3 lacks the hook: importing the guard fails, loudly.
    code = (
        "import urllib3.connectionpool as pool\n"
        "del pool.HTTPConnectionPool.ConnectionCls\n"
        "import function.netguard\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "GuardUnavailable" in result.stderr
    assert "HTTPConnectionPool.ConnectionCls" in result.stderr
    assert "refusing to start" in result.stderr
