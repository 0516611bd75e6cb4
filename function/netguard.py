"""Where a URL fetch may connect: the SSRF guard, enforced at connect time.

Checking a URL's host *before* the request is not enough: DNS can answer differently a
millisecond later (rebinding), and ``2130706433``, ``0177.0.0.1`` or ``[::ffff:127.0.0.1]``
all reach loopback. So the check sits where the socket is opened: the name is resolved
once, *every* address it resolves to must be public, and the socket connects to one of
exactly those addresses. Redirect hops open new connections and pass through here again.

Internal services (named in ``NSFWOID_PRIVATE_HOSTS``) may resolve to private addresses; every
other name is held to public ones. The guard hooks urllib3 internals (a connection class's
``_new_conn``, a pool's ``ConnectionCls``, a pool manager's ``pool_classes_by_scheme``); an
urllib3 that moved them would silently bypass the guard, so importing this module proves the
hooks still take effect and refuses to start otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager

from function.addresses import IPAddress, is_public
from function.errors import SourceNotAllowed

Resolver = Callable[[str, int], Sequence[str]]
Connector = Callable[[tuple[str, int], float | None], socket.socket]

# Set by the fetcher for the duration of one fetch: it is handed every socket that fetch
# opens or reuses, so a wall-clock deadline can shut them down. Per-read timeouts alone let
# a server dripping one header byte at a time hold a request open for hours.
socket_watcher: ContextVar[Callable[[socket.socket], None] | None] = ContextVar(
    "socket_watcher", default=None
)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def system_connector(address: tuple[str, int], timeout: float | None) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


@dataclass(frozen=True)
class AddressPolicy:
    allow_private: bool = False
    resolver: Resolver = system_resolver
    connector: Connector = system_connector
    # Exact host names (lower case, no trailing dot) that may resolve to private addresses.
    private_hosts: frozenset[str] = frozenset()

    def check(self, ip: IPAddress, private_ok: bool = False) -> None:
        if self.allow_private or private_ok:
            if ip.is_unspecified or ip.is_multicast:
                raise SourceNotAllowed("the image URL resolves to an address we do not connect to")
            return
        if not is_public(ip):
            raise SourceNotAllowed("the image URL resolves to a non-public address")

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """Resolve ``host``, refuse unless every address passes, connect to a checked one."""
        try:
            addresses = [
                ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)
            ]
        except ValueError as exc:
            raise SourceNotAllowed("the image host resolved to an unusable address") from exc
        if not addresses:
            raise socket.gaierror(f"{host} has no addresses")
        private_ok = host.lower().rstrip(".") in self.private_hosts
        for ip in addresses:
            self.check(ip, private_ok)
        last_error: OSError | None = None
        for ip in addresses:
            try:
                return self.connector((str(ip), port), timeout)
            except OSError as exc:
                last_error = exc
        assert last_error is not None
        raise last_error


def _guarded(base: type[HTTPConnection], policy: AddressPolicy) -> type[HTTPConnection]:
    class Guarded(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> socket.socket:
            # Same contract as urllib3's own _new_conn, with the policy in front of connect;
            # SourceNotAllowed is not an OSError, so urllib3 neither wraps nor retries it.
            try:
                sock = policy.connect(self._dns_host, self.port, self.timeout)
            except socket.gaierror as exc:
                raise NameResolutionError(self.host, self, exc) from exc
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"connect to {self.host} timed out") from exc
            except OSError as exc:
                raise NewConnectionError(self, f"failed to connect: {exc}") from exc
            for option in self.socket_options or ():
                sock.setsockopt(*option)
            _watch(sock)  # before the TLS handshake, which a server can drip too
            return sock

        def request(self, *args: Any, **kwargs: Any) -> None:
            if self.sock is not None:  # a pooled connection reused: _new_conn did not run
                _watch(self.sock)
            super().request(*args, **kwargs)

    return Guarded


def _watch(sock: socket.socket) -> None:
    watcher = socket_watcher.get()
    if watcher is not None:
        watcher(sock)


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose connection pools only open policy-checked sockets."""

    def __init__(self, policy: AddressPolicy, pool_maxsize: int) -> None:
        self._policy = policy
        super().__init__(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        http_pool = type(
            "GuardedHTTPPool",
            (HTTPConnectionPool,),
            {"ConnectionCls": _guarded(HTTPConnection, self._policy)},
        )
        https_pool = type(
            "GuardedHTTPSPool",
            (HTTPSConnectionPool,),
            {"ConnectionCls": _guarded(HTTPSConnection, self._policy)},
        )
        self.poolmanager.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)


class GuardUnavailable(RuntimeError):
    """The installed urllib3 no longer has the internals the connect-time guard hooks."""


_HOOKS = (
    (HTTPConnection, "_new_conn"),
    (HTTPConnection, "request"),
    (HTTPConnectionPool, "ConnectionCls"),
    (HTTPSConnectionPool, "ConnectionCls"),
    (HTTPConnectionPool, "_new_conn"),
    (PoolManager, "_new_pool"),
    (PoolManager, "connection_from_host"),
)
_INSTANCE_HOOKS = {
    "HTTPConnection": ("_dns_host", "port", "timeout", "socket_options", "sock"),
    "PoolManager": ("pool_classes_by_scheme", "key_fn_by_scheme"),
}


def verify_urllib3_hooks() -> None:
    """Prove that a guarded adapter's connections go through the policy (when they do, nothing
    is resolved or dialled: the policy refuses first).

    Names the missing internal, or the scheme whose connection skipped the guard, in a
    ``GuardUnavailable``: serving with the guard silently off would be an open SSRF proxy.
    """
    missing = [f"{cls.__name__}.{name}" for cls, name in _HOOKS if not hasattr(cls, name)]
    if not missing:
        manager = PoolManager()
        connection = HTTPConnection("guard-check.invalid", 80)
        missing = [
            f"{owner}.{name}"
            for owner, names in _INSTANCE_HOOKS.items()
            for name in names
            if not hasattr(manager if owner == "PoolManager" else connection, name)
        ]
    if missing:
        raise GuardUnavailable(_unavailable(f"missing {', '.join(missing)}"))
    # A policy whose every name resolves to loopback: a guarded connect must refuse it before
    # dialling (the connector is never called).
    policy = AddressPolicy(resolver=lambda host, port: ["127.0.0.1"], connector=_no_dial)
    adapter = GuardedAdapter(policy, pool_maxsize=1)
    try:
        for scheme in ("http", "https"):
            pool = adapter.poolmanager.connection_from_host("guard-check.invalid", 1, scheme)
            connection = pool._new_conn()
            try:
                connection.connect()
            except SourceNotAllowed:
                continue
            except Exception as exc:  # anything else means the policy was not in the path
                raise GuardUnavailable(
                    _unavailable(f"an {scheme} connect raised {exc!r}, not the guard's refusal")
                ) from exc
            finally:
                connection.close()
            raise GuardUnavailable(_unavailable(f"an {scheme} connect was not refused"))
    finally:
        adapter.close()


def _no_dial(address: tuple[str, int], timeout: float | None) -> socket.socket:
    raise GuardUnavailable(_unavailable(f"the check dialled {address[0]}"))


def _unavailable(detail: str) -> str:
    import urllib3

    return (
        f"urllib3 {urllib3.__version__} lacks what the SSRF guard hooks ({detail}); refusing to "
        "start without it. Install the locked urllib3 (requirements.lock)."
    )


verify_urllib3_hooks()
