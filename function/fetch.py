"""URL → bytes, for URLs that strangers influence.

Only http(s), no userinfo, a length cap and an optional host allowlist are checked before
any connection; where the socket may go is ``netguard``'s job, at connect time, for every
hop. Redirects are followed by hand so that each hop is re-checked. The body is read with
a byte cap and a wall-clock deadline whatever ``Content-Length`` claims, so slow-drip and
endless bodies end on our terms.

Failures map to statuses that are retried only when retrying can help: the image host's
404/410/403 are ``SourceMissing`` (422, no ``Retry-After``), its 429 and 5xx retryable
502/503s.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.cookiejar import CookiePolicy, DefaultCookiePolicy
from types import TracebackType
from urllib.parse import urljoin

import requests
import urllib3.exceptions
import urllib3.util

from function.config import ConfigError, Settings
from function.errors import (
    DeadlineExceeded,
    ScoringError,
    SourceMissing,
    SourceTimeout,
    SourceTooLarge,
    SourceUnavailable,
    TooManyRedirects,
)
from function.netguard import AddressPolicy, GuardedAdapter, socket_watcher
from function.urls import check_url

_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024
# Header values arrive latin-1 decoded: str.isdigit() accepts "²", which int() rejects.
_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    url: str
    host: str
    content_type: str
    redirects: int


def _number(raw: str) -> int | None:
    return int(raw) if _DIGITS.fullmatch(raw.strip()) else None


def _retry_after(response: requests.Response, default: int) -> int:
    seconds = _number(response.headers.get("Retry-After", ""))
    return default if seconds is None else min(max(seconds, 1), 60)


class _Watchdog:
    """Shuts down every socket of one fetch when its wall-clock deadline passes.

    Connect and read timeouts bound each wait, not their sum: a server dripping a header
    byte, a TLS record or a body chunk just under the read timeout never trips them. A
    blocked ``recv`` wakes when its socket is shut down, so this bounds the whole fetch.
    Sockets are watched through a duplicate descriptor: TLS wrapping detaches the original
    socket object, but shutdown acts on the connection both descriptors share.
    """

    def __init__(self, deadline: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def watch(self, sock: socket.socket) -> None:
        try:
            duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return  # already closed: nothing left to wait on
        with self._lock:
            self._sockets.append(duplicate)
            if self.expired:
                _shutdown(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # the peer or the pool closed it first


def _no_cookies() -> CookiePolicy:
    """A policy that neither stores nor sends any cookie.

    The session (and its cookie jar) is shared by every caller: a cookie one image host sets
    while fetching for one caller must never ride along on a fetch for another.
    """
    return DefaultCookiePolicy(allowed_domains=[])


def policy_for(settings: Settings) -> AddressPolicy:
    """Where this service's fetches may connect, as its settings say."""
    return AddressPolicy(
        allow_private=settings.allow_private_networks,
        private_hosts=frozenset(settings.private_hosts),
    )


def check_ca_bundle(settings: Settings) -> None:
    """The configured CA bundle must be a file. Checked when a service starts (not when settings
    are parsed: manifests name a path of the production host), so a missing bundle is one
    start-up error, not a 502 per fetch."""
    if settings.ca_bundle is not None and not settings.ca_bundle.is_file():
        raise ConfigError(
            f"NSFWOID_CA_BUNDLE: {settings.ca_bundle} is not a file", "NSFWOID_CA_BUNDLE"
        )


class Fetcher:
    """One per process: a pooled session whose every socket goes through the guard."""

    def __init__(self, settings: Settings, policy: AddressPolicy | None = None) -> None:
        self._settings = settings
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy from the environment can bypass the guard
        self._session.cookies.set_policy(_no_cookies())
        check_ca_bundle(settings)
        if settings.ca_bundle is not None:
            self._session.verify = str(settings.ca_bundle)
        adapter = GuardedAdapter(
            policy or policy_for(settings), pool_maxsize=settings.max_in_flight
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {"User-Agent": settings.user_agent, "Accept-Encoding": "identity", "Accept": "image/*"}
        )

    def close(self) -> None:
        self._session.close()

    def fetch(self, url: str, deadline: float | None = None) -> Fetched:
        """Fetch ``url`` within the fetch deadline, or the caller's ``deadline`` if sooner."""
        settings = self._settings
        own = time.monotonic() + settings.fetch_deadline
        # The request's deadline, when it is the sooner one, is the one to report.
        timeout: type[ScoringError] = SourceTimeout
        if deadline is not None and deadline < own:
            timeout = DeadlineExceeded
        deadline = own if deadline is None else min(deadline, own)
        host = check_url(url, settings)
        with _Watchdog(deadline) as watchdog:
            token = socket_watcher.set(watchdog.watch)
            try:
                return self._follow(url, host, _Clock(deadline, watchdog, timeout))
            finally:
                socket_watcher.reset(token)

    def _follow(self, url: str, host: str, clock: _Clock) -> Fetched:
        settings = self._settings
        for hop in range(settings.max_redirects + 1):
            response = self._request(url, clock)
            with response:
                if response.status_code in _REDIRECTS and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    host = check_url(url, settings)
                    continue
                self._raise_for_status(response)
                data = self._read_body(response, clock)
                content_type = response.headers.get("Content-Type", "")
                return Fetched(data, url, host, content_type, hop)
        raise TooManyRedirects(f"more than {settings.max_redirects} redirects")

    def _request(self, url: str, clock: _Clock) -> requests.Response:
        remaining = clock.remaining()
        settings = self._settings
        timeout = (
            min(settings.fetch_connect_timeout, remaining),
            min(settings.fetch_read_timeout, remaining),
        )
        try:
            return self._session.get(url, stream=True, allow_redirects=False, timeout=timeout)
        except ScoringError:
            raise
        except requests.exceptions.Timeout as exc:
            raise clock.timed_out("the image host did not answer in time") from exc
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
        ) as exc:
            if clock.expired():  # the watchdog cut a dripping answer short
                raise clock.timed_out("the image host did not answer in time") from exc
            raise SourceUnavailable("the image host could not be reached") from exc

    @staticmethod
    def _raise_for_status(response: requests.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status in (429, 503):
            raise SourceUnavailable(
                f"the image host is overloaded (HTTP {status})",
                status=503,
                retry_after=_retry_after(response, 5),
            )
        if status in (404, 410):
            raise SourceMissing(f"the image host does not have the file (HTTP {status})")
        if status == 403:
            raise SourceMissing(
                "the image host refuses to serve the file (HTTP 403)", code="source_forbidden"
            )
        raise SourceUnavailable(f"the image host answered HTTP {status}")

    def _read_body(self, response: requests.Response, clock: _Clock) -> bytes:
        cap = self._settings.max_fetch_bytes
        declared = _number(response.headers.get("Content-Length", ""))
        if declared is not None and declared > cap:
            raise SourceTooLarge(f"the image is larger than {cap} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                chunk = response.raw.read1(_CHUNK, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)  # decoded bytes: a gzip bomb counts at its full size
                if size > cap:
                    raise SourceTooLarge(f"the image is larger than {cap} bytes")
                chunks.append(chunk)
                if clock.expired():
                    raise clock.timed_out("the image host sent the file too slowly")
        except ScoringError:
            raise
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
            AttributeError,
        ) as exc:
            if clock.expired():
                raise clock.timed_out("the image host sent the file too slowly") from exc
            raise SourceUnavailable("the image download was interrupted") from exc
        # A body that "ended" because the watchdog shut the socket is not the whole file.
        if clock.expired():
            raise clock.timed_out("the image host sent the file too slowly")
        if declared is not None and size < declared:
            raise SourceUnavailable("the image host sent a short body")
        return b"".join(chunks)


@dataclass(frozen=True)
class _Clock:
    """One fetch's deadline, its watchdog, and which timeout error reaching it means."""

    deadline: float
    watchdog: _Watchdog
    error: type[ScoringError]

    def remaining(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.timed_out("the image host did not answer in time")
        return remaining

    def expired(self) -> bool:
        return self.watchdog.expired or time.monotonic() >= self.deadline

    def timed_out(self, message: str) -> ScoringError:
        if self.error is DeadlineExceeded:
            return DeadlineExceeded("scoring did not finish within the request deadline")
        return self.error(message)
