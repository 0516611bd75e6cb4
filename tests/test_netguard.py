"""The SSRF guard at connect time: which addresses are public, and that nothing else is dialled.

Three layers of evidence:

* ``is_public`` / ``AddressPolicy.check`` over every non-public range and spelling;
* ``AddressPolicy.connect`` and the whole ``Fetcher`` with a scripted resolver (the test's
  DNS) and a recording connector (the test's network) that only ever reaches the loopback
  image host through a "public" address, so every dial attempt is on record;
* numeric spellings of loopback against the *real* system resolver, where the loopback
  image host's hit log proves that no request got through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from function.config import Settings
from function.errors import SourceNotAllowed, SourceUnavailable
from function.fetch import Fetcher
from function.netguard import AddressPolicy, is_public
from tests.imagehost import ImageHost, send
from tests.photos import photo_jpeg

# A routable address outside every special-purpose range, standing in for "the internet":
# the recording connector reaches the loopback image host when this address is dialled.
PUBLIC = "93.184.215.14"
PUBLIC_V6 = "2606:4700::1111"

NON_PUBLIC = [
    # IPv4: RFC 1918, loopback, link-local (cloud metadata), CGNAT, "this network",
    # multicast, reserved, broadcast, IETF protocol assignments, documentation, benchmarking.
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.255.255",
    "127.0.0.1",
    "127.1.2.3",
    "127.255.255.254",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.254",
    "255.255.255.255",
    "192.0.0.8",
    "192.0.0.170",
    "192.0.0.200",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    # IPv6: loopback, unspecified, link-local, site-local, ULA, multicast, documentation,
    # and every form that embeds an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo).
    "::1",
    "::",
    "fe80::1",
    "febf::1",
    "fec0::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "3fff::1",
    "100::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:8.8.8.8",  # even a public IPv4 is refused in mapped form: one spelling per host
    "::127.0.0.1",
    "::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b::7f00:1",
    "64:ff9b::808:808",
    "64:ff9b:1::1",
    "2002:7f00:1::1",
    "2002:a00:1::1",
    "2002:808:808::1",
    "2001::1",
    "2001:2::1",
    "2001:10::1",
    "5f00::1",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
]
PUBLIC_ADDRESSES = ["8.8.8.8", "1.1.1.1", PUBLIC, "2606:4700::1111", "2001:4860:4860::8888"]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not is_public(ip)
    with pytest.raises(SourceNotAllowed):
        AddressPolicy().check(ip)


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_public_addresses_are_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert is_public(ip)
    AddressPolicy().check(ip)


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.1", "169.254.169.254", "::1", "fc00::1"])
def test_allow_private_lets_private_addresses_through(address: str) -> None:
    AddressPolicy(allow_private=True).check(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "224.0.0.1", "ff02::1"])
def test_allow_private_still_refuses_unspecified_and_multicast(address: str) -> None:
    with pytest.raises(SourceNotAllowed):
        AddressPolicy(allow_private=True).check(ipaddress.ip_address(address))


class Network:
    """The test's DNS and network: scripted answers, every dial attempt recorded.

    ``answers[name]`` is a list of answers; the n-th resolution of ``name`` gets the n-th
    (the last one repeats). Dialling ``PUBLIC``/``PUBLIC_V6`` reaches the loopback image
    host; anything else is refused *and recorded*, so a test can prove it never happened.
    """

    def __init__(self, loopback_port: int, answers: dict[str, list[list[str]]]) -> None:
        self.loopback_port = loopback_port
        self.answers = answers
        self.resolved: list[str] = []
        self.dialled: list[str] = []

    def resolve(self, host: str, port: int) -> list[str]:
        count = self.resolved.count(host)
        self.resolved.append(host)
        script = self.answers.get(host)
        if script is None:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise socket.gaierror(f"{host}: unknown to the test's DNS") from None
            return [host]
        return script[min(count, len(script) - 1)]

    def connect(self, address: tuple[str, int], timeout: float | None) -> socket.socket:
        self.dialled.append(address[0])
        if address[0] in (PUBLIC, PUBLIC_V6):
            return socket.create_connection(("127.0.0.1", self.loopback_port), timeout=timeout)
        raise ConnectionRefusedError(f"the test network does not route to {address[0]}")

    def policy(self, allow_private: bool = False) -> AddressPolicy:
        return AddressPolicy(
            allow_private=allow_private, resolver=self.resolve, connector=self.connect
        )

    def only_public_dialled(self) -> bool:
        return all(is_public(ipaddress.ip_address(a)) for a in self.dialled)


@pytest.fixture(scope="module")
def host() -> Iterator[ImageHost]:
    image_host = ImageHost()
    yield image_host
    image_host.close()


def settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "fetch_deadline": 3.0,
        "fetch_read_timeout": 2.0,
        "fetch_connect_timeout": 1.0,
        "allow_private_networks": False,
    }
    return Settings(**(base | overrides))  # type: ignore[arg-type]


# --- AddressPolicy.connect ------------------------------------------------------------
def test_connect_refuses_a_name_with_any_private_address_and_dials_nothing() -> None:
    net = Network(1, {"mixed.test": [[PUBLIC, "10.0.0.5"]], "mixed6.test": [[PUBLIC, "::1"]]})
    for name in ("mixed.test", "mixed6.test"):
        with pytest.raises(SourceNotAllowed):
            net.policy().connect(name, 80, 1.0)
    assert net.resolved == ["mixed.test", "mixed6.test"]
    assert net.dialled == []


def test_connect_refuses_unparseable_resolver_answers() -> None:
    net = Network(1, {"weird.test": [["not-an-address"]]})
    with pytest.raises(SourceNotAllowed):
        net.policy().connect("weird.test", 80, 1.0)
    assert net.dialled == []


def test_connect_strips_zone_ids_and_still_checks_the_address() -> None:
    net = Network(1, {"zoned.test": [["fe80::1%eth0"]]})
    with pytest.raises(SourceNotAllowed):
        net.policy().connect("zoned.test", 80, 1.0)
    assert net.dialled == []


def test_each_connect_resolves_again_so_rebinding_is_caught(host: ImageHost) -> None:
    net = Network(host.port, {"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    policy = net.policy()
    first = policy.connect("rebind.test", host.port, 1.0)
    first.close()
    with pytest.raises(SourceNotAllowed):
        policy.connect("rebind.test", host.port, 1.0)
    assert net.resolved == ["rebind.test", "rebind.test"]
    assert net.dialled == [PUBLIC]


def test_connect_tries_the_next_checked_address_when_one_fails(host: ImageHost) -> None:
    net = Network(host.port, {"two.test": [["8.8.8.8", PUBLIC]]})
    sock = net.policy().connect("two.test", host.port, 1.0)
    sock.close()
    assert net.dialled == ["8.8.8.8", PUBLIC]


# --- the whole fetch path through the guard -----------------------------------------
def close_after(body: bytes) -> object:
    def route(handler: BaseHTTPRequestHandler) -> None:
        send(handler, body, headers={"Connection": "close"})
        handler.close_connection = True

    return route


def test_fetch_through_the_guard_reaches_a_public_name(host: ImageHost) -> None:
    body = photo_jpeg("coffee", (64, 48))
    host.file("/ok", body)
    net = Network(host.port, {"images.test": [[PUBLIC]]})
    fetcher = Fetcher(settings(), policy=net.policy())
    try:
        fetched = fetcher.fetch(f"http://images.test:{host.port}/ok")
    finally:
        fetcher.close()
    assert fetched.data == body
    assert fetched.host == "images.test"
    assert net.dialled == [PUBLIC]
    assert host.hits_for("/ok") == 1


def test_fetch_refuses_a_name_resolving_to_public_and_private(host: ImageHost) -> None:
    host.file("/mixed", b"secret")
    net = Network(host.port, {"mixed.test": [[PUBLIC, "127.0.0.1"]]})
    fetcher = Fetcher(settings(), policy=net.policy())
    try:
        with pytest.raises(SourceNotAllowed):
            fetcher.fetch(f"http://mixed.test:{host.port}/mixed")
    finally:
        fetcher.close()
    assert net.dialled == []
    assert host.hits_for("/mixed") == 0


def test_dns_rebinding_between_two_fetches_is_refused(host: ImageHost) -> None:
    body = photo_jpeg("coffee", (64, 48))
    host.route("/once", close_after(body))  # no keep-alive: the second fetch must dial again
    net = Network(host.port, {"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    fetcher = Fetcher(settings(), policy=net.policy())
    try:
        assert fetcher.fetch(f"http://rebind.test:{host.port}/once").data == body
        with pytest.raises(SourceNotAllowed):
            fetcher.fetch(f"http://rebind.test:{host.port}/once")
    finally:
        fetcher.close()
    assert net.resolved == ["rebind.test", "rebind.test"]
    assert net.dialled == [PUBLIC]
    assert host.hits_for("/once") == 1


def test_redirect_hop_is_resolved_and_checked_again(host: ImageHost) -> None:
    host.file("/secret", b"metadata")
    host.redirect("/hop", f"http://internal.test:{host.port}/secret")
    host.redirect("/hop-literal", f"http://169.254.169.254:{host.port}/secret")
    host.redirect("/hop-loopback", f"http://127.0.0.1:{host.port}/secret")
    net = Network(host.port, {"images.test": [[PUBLIC]], "internal.test": [["10.1.2.3"]]})
    fetcher = Fetcher(settings(), policy=net.policy())
    try:
        for path in ("/hop", "/hop-literal", "/hop-loopback"):
            with pytest.raises(SourceNotAllowed):
                fetcher.fetch(f"http://images.test:{host.port}{path}")
    finally:
        fetcher.close()
    assert "internal.test" in net.resolved
    assert net.only_public_dialled()
    assert host.hits_for("/secret") == 0
    assert host.hits_for("/hop") == 1


def test_rebinding_on_a_redirect_to_the_same_name_is_refused(host: ImageHost) -> None:
    # The first answer is public; the redirect opens a new connection to the same name,
    # whose second answer is loopback. Connection: close forces that new connection.
    def hop(handler: BaseHTTPRequestHandler) -> None:
        send(
            handler,
            b"",
            status=302,
            content_type="text/plain",
            headers={"Location": "/secret2", "Connection": "close"},
        )
        handler.close_connection = True

    host.route("/rehop", hop)
    host.file("/secret2", b"metadata")
    net = Network(host.port, {"flip.test": [[PUBLIC], ["127.0.0.1"]]})
    fetcher = Fetcher(settings(), policy=net.policy())
    try:
        with pytest.raises(SourceNotAllowed):
            fetcher.fetch(f"http://flip.test:{host.port}/rehop")
    finally:
        fetcher.close()
    assert net.resolved == ["flip.test", "flip.test"]
    assert net.dialled == [PUBLIC]
    assert host.hits_for("/secret2") == 0


def test_unknown_name_is_unavailable_not_refused(host: ImageHost) -> None:
    net = Network(host.port, {})
    fetcher = Fetcher(settings(), policy=net.policy())
    try:
        with pytest.raises(SourceUnavailable):
            fetcher.fetch(f"http://nowhere.test:{host.port}/x")
    finally:
        fetcher.close()
    assert net.dialled == []


def test_no_proxy_from_the_environment_is_used(
    host: ImageHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would be dialled instead of the checked address; trust_env=False ignores it.
    body = photo_jpeg("coffee", (64, 48))
    host.file("/direct", body)
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    monkeypatch.setenv("http_proxy", "http://10.9.9.9:3128")
    net = Network(host.port, {"images.test": [[PUBLIC]]})
    fetcher = Fetcher(settings(), policy=net.policy())
    try:
        assert fetcher.fetch(f"http://images.test:{host.port}/direct").data == body
    finally:
        fetcher.close()
    assert net.dialled == [PUBLIC]


# --- loopback spellings against the real resolver -----------------------------------
SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "2130706433",
    "0177.0.0.1",
    "0x7f.1",
    "0x7f000001",
    "017700000001",
    "127.1",
    "0",
    "0.0.0.0",
    "[::ffff:7f00:1]",
    "[::ffff:127.0.0.1]",
    "[::1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "LOCALHOST",
]
IPV4_LOOPBACK_SPELLINGS = [
    s for s in SPELLINGS if not s.startswith("[") and s not in ("0", "0.0.0.0")
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_loopback_spellings_are_refused_by_the_real_resolver(
    host: ImageHost, spelling: str
) -> None:
    body = photo_jpeg("coffee", (64, 48))
    path = f"/spelled-{SPELLINGS.index(spelling)}"
    host.file(path, body)
    url = f"http://{spelling}:{host.port}{path}"

    guarded = Fetcher(settings(allow_private_networks=False))
    try:
        with pytest.raises(SourceNotAllowed):
            guarded.fetch(url)
    finally:
        guarded.close()
    assert host.hits_for(path) == 0

    # Control: with private networks allowed, the IPv4 spellings do reach the loopback host,
    # so the zero above is the guard's doing, not a spelling that could never have worked.
    # (The host listens on IPv4 only; 0.0.0.0 stays refused even then: it means "this host".)
    opened = Fetcher(settings(allow_private_networks=True))
    try:
        try:
            reached = opened.fetch(url).data == body
        except (SourceUnavailable, SourceNotAllowed):
            reached = False
    finally:
        opened.close()
    assert host.hits_for(path) == (1 if reached else 0)
    if spelling in IPV4_LOOPBACK_SPELLINGS:
        assert reached, f"{spelling} should reach the IPv4 loopback host when allowed"
