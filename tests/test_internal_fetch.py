"""Fetching from internal services: a private CA (NSFWOID_CA_BUNDLE) and named private hosts
(NSFWOID_PRIVATE_HOSTS), with the SSRF guard still holding every other name.

Everything runs on 127.0.0.1: a TLS image host whose certificate a CA made here (with the
``openssl`` CLI) signed, and the test's own resolver that maps test names to loopback.
"""

from __future__ import annotations

import dataclasses
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from function.config import ConfigError, Settings
from function.errors import SourceNotAllowed, SourceUnavailable
from function.fetch import Fetcher, policy_for
from tests.imagehost import ImageHost, send
from tests.photos import photo_jpeg

INTERNAL = "images.internal.test"
OTHER = "other.internal.test"


class Resolver:
    """The test's DNS: every test name resolves to loopback; records what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return ["127.0.0.1"]


def fetcher(settings: Settings, resolver: Resolver) -> Fetcher:
    # The policy the settings give, with only name resolution swapped for the test's.
    return Fetcher(settings, policy=dataclasses.replace(policy_for(settings), resolver=resolver))


def settings(**overrides: object) -> Settings:
    base: dict[str, object] = {"fetch_deadline": 5.0, "fetch_read_timeout": 3.0}
    return Settings(**(base | overrides))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    image_host = ImageHost()
    yield image_host
    image_host.close()


# --- private hosts ---------------------------------------------------------------------
def test_a_named_internal_host_may_resolve_to_a_private_address(host: ImageHost) -> None:
    body = photo_jpeg("coffee", (64, 48))
    host.file("/internal", body)
    resolver = Resolver()
    client = fetcher(settings(private_hosts=(INTERNAL,)), resolver)
    try:
        fetched = client.fetch(f"http://{INTERNAL.upper()}:{host.port}/internal")
    finally:
        client.close()
    assert fetched.data == body
    assert [name.lower() for name in resolver.asked] == [INTERNAL]
    assert host.hits_for("/internal") == 1


def test_any_other_name_resolving_to_a_private_address_is_refused(host: ImageHost) -> None:
    host.file("/not-listed", b"secret")
    resolver = Resolver()
    client = fetcher(settings(private_hosts=(INTERNAL,)), resolver)
    try:
        with pytest.raises(SourceNotAllowed):
            client.fetch(f"http://{OTHER}:{host.port}/not-listed")
        # A parent or a sibling of the listed name is not the listed name.
        with pytest.raises(SourceNotAllowed):
            client.fetch(f"http://internal.test:{host.port}/not-listed")
        # Nor is the loopback address itself.
        with pytest.raises(SourceNotAllowed):
            client.fetch(f"http://127.0.0.1:{host.port}/not-listed")
    finally:
        client.close()
    assert host.hits_for("/not-listed") == 0


def test_an_internal_host_cannot_redirect_to_an_unlisted_private_name(host: ImageHost) -> None:
    host.file("/secret", b"secret")

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        location = f"http://{OTHER}:{host.port}/secret"
        send(handler, b"", status=302, headers={"Location": location})

    host.routes["/hop"] = redirect
    client = fetcher(settings(private_hosts=(INTERNAL,)), Resolver())
    try:
        with pytest.raises(SourceNotAllowed):
            client.fetch(f"http://{INTERNAL}:{host.port}/hop")
    finally:
        client.close()
    assert host.hits_for("/hop") == 1
    assert host.hits_for("/secret") == 0


def test_private_hosts_are_exact_names() -> None:
    env = {"NSFWOID_PRIVATE_HOSTS": f" {INTERNAL.upper()}., thumbor.svc "}
    assert Settings.from_env(env).private_hosts == (INTERNAL, "thumbor.svc")
    with pytest.raises(ConfigError, match="NSFWOID_PRIVATE_HOSTS"):
        Settings.from_env({"NSFWOID_PRIVATE_HOSTS": "*.internal.test"})


# --- a private CA ----------------------------------------------------------------------
def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a server certificate for INTERNAL that it signed."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make the test CA")
    root = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=nsfwoid test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=root,
    )  # fmt: skip
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={INTERNAL}",
            cwd=root)  # fmt: skip
    (root / "server.ext").write_text(
        f"subjectAltName=DNS:{INTERNAL}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=root,
    )  # fmt: skip
    return root


class _TLSHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        send(self, self.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def tls_host(pki: Path) -> Iterator[tuple[int, bytes]]:
    body = photo_jpeg("coffee", (48, 32))
    handler = type("Handler", (_TLSHandler,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_an_internal_ca_bundle_verifies_an_internal_endpoint(
    pki: Path, tls_host: tuple[int, bytes]
) -> None:
    port, body = tls_host
    env = {
        "NSFWOID_CA_BUNDLE": str(pki / "ca.pem"),
        "NSFWOID_PRIVATE_HOSTS": INTERNAL,
        "NSFWOID_FETCH_DEADLINE": "5",
    }
    client = fetcher(Settings.from_env(env), Resolver())
    try:
        fetched = client.fetch(f"https://{INTERNAL}:{port}/photo.jpg")
    finally:
        client.close()
    assert fetched.data == body


def test_without_the_bundle_the_internal_certificate_is_refused(
    pki: Path, tls_host: tuple[int, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _ = tls_host
    # The fetch session ignores the environment (no proxy may bypass the guard), so this
    # variable, which plain requests would honour, changes nothing: the setting is the way.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki / "ca.pem"))
    client = fetcher(settings(private_hosts=(INTERNAL,)), Resolver())
    try:
        with pytest.raises(SourceUnavailable) as caught:
            client.fetch(f"https://{INTERNAL}:{port}/photo.jpg")
    finally:
        client.close()
    assert "CERTIFICATE_VERIFY_FAILED" in repr(caught.value.__cause__)


def test_the_bundle_does_not_switch_off_the_guard(pki: Path, tls_host: tuple[int, bytes]) -> None:
    port, _ = tls_host
    client = fetcher(settings(ca_bundle=pki / "ca.pem"), Resolver())
    try:
        with pytest.raises(SourceNotAllowed):
            client.fetch(f"https://{INTERNAL}:{port}/photo.jpg")
    finally:
        client.close()


def test_a_missing_bundle_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NSFWOID_CA_BUNDLE"):
        Fetcher(settings(ca_bundle=tmp_path / "absent.pem"))
