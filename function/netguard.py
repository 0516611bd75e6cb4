"""Where a URL fetch may connect: the SSRF guard, enforced at connect time.

Checking a URL's host *before* the request is not enough: DNS can answer differently a
millisecond later (rebinding), and ``2130706433``, ``0177.0.0.1`` or ``[::ffff:127.0.0.1]``
all reach loopback. So the check sits where the socket is opened: the name is resolved
once, *every* address it resolves to must be public, and the socket connects to one of
exactly those addresses. Redirect hops open new connections and pass through here again.
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

from function.errors import SourceNotAllowed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
Connector = Callable[[tuple[str, int], float | None], socket.socket]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Special-purpose ranges that ``is_global`` misses on some interpreters: 3.11 before 3.11.10
# (CVE-2024-4032) calls most of 192.0.0.0/24 and 2001::/23 global, and no 3.11 knows the
# deprecated site-local fec0::/10 or RFC 9637's documentation prefix 3fff::/20. The check
# must not depend on the interpreter's patch level, so they are listed here.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(net)
    for net in (
        "192.0.0.0/24",
        "2001::/23",
        "64:ff9b:1::/48",
        "100::/64",
        "5f00::/16",
        "fec0::/10",
        "3fff::/20",
    )
)

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


def is_public(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Addresses that embed an IPv4 address reach it by another spelling: refuse them
        # outright rather than trusting every translator on the path.
        if ip.ipv4_mapped is not None or ip.sixtofour is not None or ip.teredo is not None:
            return False
        if ip in _NAT64:
            return False
    if any(ip in net for net in _NOT_PUBLIC if net.version == ip.version):
        return False
    return bool(
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and not ip.is_loopback
        and not ip.is_link_local
        and not ip.is_private
        and not ip.is_unspecified
    )


@dataclass(frozen=True)
class AddressPolicy:
    allow_private: bool = False
    resolver: Resolver = system_resolver
    connector: Connector = system_connector

    def check(self, ip: IPAddress) -> None:
        if self.allow_private:
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
        for ip in addresses:
            self.check(ip)
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
