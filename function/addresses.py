"""Which IP addresses count as public: pure functions over ``ipaddress``, no I/O."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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
