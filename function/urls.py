"""Which URLs may be fetched at all, decided before any connection is made.

Scheme, credentials, length, host syntax and the host allowlist. Where a socket may then go
(private addresses, DNS rebinding) is ``netguard``'s job, at connect time.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import idna
import urllib3.exceptions
import urllib3.util

from function.config import Settings
from function.errors import SourceNotAllowed

# What a host name may contain once IDNA-encoded. Anything else (a backslash, "%", a space)
# is where URL parsers disagree: urlsplit would check one host and requests connect to another.
_HOST_CHARS = re.compile(r"[a-z0-9_.-]+")


def check_url(url: str, settings: Settings) -> str:
    """Refuse a URL before any connection is made; returns its lower-cased host."""
    if len(url) > settings.max_url_length:
        raise SourceNotAllowed(f"the URL is longer than {settings.max_url_length} characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        raise SourceNotAllowed("the URL is malformed") from exc
    if parts.scheme not in ("http", "https"):
        raise SourceNotAllowed("only http and https URLs are fetched")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise SourceNotAllowed("URLs with credentials are not fetched")
    host = _ascii_host(parts.hostname or "")
    if not host:
        raise SourceNotAllowed("the URL has no host")
    if port == 0:
        raise SourceNotAllowed("the URL's port is invalid")
    if _connect_host(url) != host:
        # requests (urllib3) would connect somewhere else than the host checked here.
        raise SourceNotAllowed("the URL is malformed")
    if settings.allowed_hosts and not host_allowed(host, settings.allowed_hosts):
        raise SourceNotAllowed(f"the host {host} is not on this service's allowlist")
    return host


def _ascii_host(hostname: str) -> str:
    """The host as it will be resolved: IDNA-encoded like requests does, or refused."""
    host = hostname.rstrip(".")
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii").lower()
        except idna.IDNAError as exc:
            raise SourceNotAllowed("the URL's host name is not a valid name") from exc
    if ":" in host:  # an IPv6 literal (urlsplit dropped the brackets)
        if "%" in host:
            raise SourceNotAllowed("IPv6 zone ids are not fetched")
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError as exc:
            raise SourceNotAllowed("the URL's host is not a valid address") from exc
    if host and not _HOST_CHARS.fullmatch(host):
        raise SourceNotAllowed("the URL's host name has characters hosts do not have")
    return host


def _connect_host(url: str) -> str:
    """The host urllib3 itself parses out of ``url`` (what the socket will be opened to)."""
    try:
        parsed = urllib3.util.parse_url(url).host or ""
    except urllib3.exceptions.LocationParseError as exc:
        raise SourceNotAllowed("the URL is malformed") from exc
    try:
        return _ascii_host(parsed.strip("[]").lower())
    except SourceNotAllowed as exc:
        raise SourceNotAllowed("the URL is malformed") from exc


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False
