"""URL → bytes, for URLs that strangers influence.

Only http(s), no userinfo, a length cap and an optional host allowlist are checked before
any connection; where the socket may go is ``netguard``'s job, at connect time, for every
hop. Redirects are followed by hand so that each hop is re-checked. The body is read with
a byte cap and a wall-clock deadline whatever ``Content-Length`` claims, so slow-drip and
endless bodies end on our terms.

Failures map to statuses Knative Eventing retries only when retrying can help: the image
host's 404/403/410 stay retryable 502s on purpose (an upload may not be fetchable yet).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from function.config import Settings
from function.errors import (
    ScoringError,
    SourceNotAllowed,
    SourceTimeout,
    SourceTooLarge,
    SourceUnavailable,
    TooManyRedirects,
)
from function.netguard import AddressPolicy, GuardedAdapter

_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Fetched:
    data: bytes
    url: str
    host: str
    content_type: str
    redirects: int


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
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise SourceNotAllowed("the URL has no host")
    if port == 0:
        raise SourceNotAllowed("the URL's port is invalid")
    if settings.allowed_hosts and not host_allowed(host, settings.allowed_hosts):
        raise SourceNotAllowed(f"the host {host} is not on this service's allowlist")
    return host


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def _retry_after(response: requests.Response, default: int) -> int:
    raw = response.headers.get("Retry-After", "")
    return min(max(int(raw), 1), 60) if raw.isdigit() else default


class Fetcher:
    """One per process: a pooled session whose every socket goes through the guard."""

    def __init__(self, settings: Settings, policy: AddressPolicy | None = None) -> None:
        self._settings = settings
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy from the environment can bypass the guard
        adapter = GuardedAdapter(
            policy or AddressPolicy(allow_private=settings.allow_private_networks),
            pool_maxsize=settings.max_in_flight,
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {"User-Agent": settings.user_agent, "Accept-Encoding": "identity", "Accept": "image/*"}
        )

    def close(self) -> None:
        self._session.close()

    def fetch(self, url: str) -> Fetched:
        settings = self._settings
        deadline = time.monotonic() + settings.fetch_deadline
        host = check_url(url, settings)
        for hop in range(settings.max_redirects + 1):
            response = self._request(url, deadline)
            with response:
                if response.status_code in _REDIRECTS and "Location" in response.headers:
                    url = urljoin(url, response.headers["Location"])
                    host = check_url(url, settings)
                    continue
                self._raise_for_status(response)
                data = self._read_body(response, deadline)
                content_type = response.headers.get("Content-Type", "")
                return Fetched(data, url, host, content_type, hop)
        raise TooManyRedirects(f"more than {settings.max_redirects} redirects")

    def _request(self, url: str, deadline: float) -> requests.Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SourceTimeout("the image host did not answer in time")
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
            raise SourceTimeout("the image host did not answer in time") from exc
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
        ) as exc:
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
        if status in (404, 410, 403):
            raise SourceUnavailable(f"the image host does not serve the file (HTTP {status})")
        raise SourceUnavailable(f"the image host answered HTTP {status}")

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        cap = self._settings.max_fetch_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > cap:
            raise SourceTooLarge(f"the image is larger than {cap} bytes")
        # A slow-drip server can keep each read just under the read timeout; closing the
        # response at the deadline unblocks the read so the wall clock wins.
        timer = threading.Timer(max(deadline - time.monotonic(), 0), response.close)
        timer.daemon = True
        timer.start()
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
                if time.monotonic() > deadline:
                    raise SourceTimeout("the image host sent the file too slowly")
        except ScoringError:
            raise
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
            AttributeError,
        ) as exc:
            if time.monotonic() >= deadline:
                raise SourceTimeout("the image host sent the file too slowly") from exc
            raise SourceUnavailable("the image download was interrupted") from exc
        finally:
            timer.cancel()
        if declared.isdigit() and size < int(declared):
            raise SourceUnavailable("the image host sent a short body")
        return b"".join(chunks)
