"""Client address: the peer, or the right-most untrusted X-Forwarded-For hop behind
trusted proxies; a forged or broken chain never wins over the peer."""

from __future__ import annotations

import gc
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.clientip import ClientIP, _parse
from collector.errors import ConfigError

TRUSTED = ["10.0.0.0/8", "192.168.1.10/32", "2001:db8:100::/48"]


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        pytest.param("203.0.113.7", None, "203.0.113.7", id="no-xff"),
        pytest.param("203.0.113.7", "198.51.100.1", "203.0.113.7", id="xff-ignored"),
        pytest.param("10.0.0.1", "198.51.100.1", "10.0.0.1", id="even-from-a-private-peer"),
        pytest.param("2001:db8::5", None, "2001:db8::5", id="ipv6-peer"),
        pytest.param("::ffff:203.0.113.7", None, "203.0.113.7", id="ipv4-mapped-peer"),
        pytest.param(None, "198.51.100.1", "", id="no-peer"),
        pytest.param("", None, "", id="empty-peer"),
    ],
)
def test_without_trusted_proxies_the_peer_is_the_client(
    peer: str | None, xff: str | None, client: str
) -> None:
    assert ClientIP([]).resolve(peer, xff) == client


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        pytest.param("10.0.0.1", "198.51.100.1", "198.51.100.1", id="one-trusted-proxy"),
        pytest.param(
            "10.0.0.1", "198.51.100.1, 10.2.3.4", "198.51.100.1", id="two-trusted-proxies"
        ),
        pytest.param(
            "10.0.0.1",
            "6.6.6.6, 198.51.100.1, 10.2.3.4",
            "198.51.100.1",
            id="spoofed-left-entry-ignored",
        ),
        pytest.param(
            "10.0.0.1",
            "10.9.9.9, 203.0.113.50,198.51.100.1",
            "198.51.100.1",
            id="right-most-untrusted-wins",
        ),
        pytest.param("10.0.0.1", "10.5.5.5, 10.6.6.6", "10.5.5.5", id="all-trusted-left-most"),
        pytest.param("10.0.0.1", None, "10.0.0.1", id="trusted-peer-no-xff"),
        pytest.param("10.0.0.1", "", "10.0.0.1", id="trusted-peer-empty-xff"),
        pytest.param("203.0.113.9", "198.51.100.1", "203.0.113.9", id="untrusted-peer-xff-ignored"),
        pytest.param("192.168.1.10", "198.51.100.1", "198.51.100.1", id="trusted-single-host"),
        pytest.param(
            "192.168.1.11", "198.51.100.1", "192.168.1.11", id="neighbour-of-trusted-host"
        ),
        pytest.param("2001:db8:100::1", "2001:db8:ffff::42", "2001:db8:ffff::42", id="ipv6-chain"),
        pytest.param(
            "2001:db8:100::1",
            "198.51.100.1, 2001:db8:100::7",
            "198.51.100.1",
            id="mixed-families",
        ),
        pytest.param("::ffff:10.0.0.1", "::ffff:198.51.100.1", "198.51.100.1", id="ipv4-mapped"),
        pytest.param("10.0.0.1", "198.51.100.1:53211", "198.51.100.1", id="v4-with-port"),
        pytest.param("10.0.0.1", "[2001:db8:ffff::42]:443", "2001:db8:ffff::42", id="v6-with-port"),
        pytest.param("10.0.0.1", "2001:DB8:FFFF:0::42", "2001:db8:ffff::42", id="v6-normalised"),
        pytest.param("10.0.0.1", "  198.51.100.1  ", "198.51.100.1", id="whitespace"),
    ],
)
def test_behind_trusted_proxies_xff_is_walked_from_the_right(
    peer: str, xff: str, client: str
) -> None:
    assert ClientIP(TRUSTED).resolve(peer, xff) == client


@pytest.mark.parametrize(
    "xff",
    [
        pytest.param("unknown", id="nginx-unknown"),
        pytest.param("garbage", id="garbage"),
        pytest.param("198.51.100.1, not-an-ip", id="garbage-right-most"),
        pytest.param("198.51.100.1,,10.2.3.4", id="empty-hop"),
        pytest.param("198.51.100.1, 10.2.3.4, _hidden", id="obfuscated-rfc7239-node"),
        pytest.param("999.1.1.1", id="octet-out-of-range"),
        pytest.param("[2001:db8::1", id="unclosed-bracket"),
        pytest.param("fe80::1%eth0", id="scoped-v6"),
        pytest.param("198.51.100.1\x00", id="nul-byte"),
    ],
)
def test_a_broken_chain_falls_back_to_the_peer(xff: str) -> None:
    assert ClientIP(TRUSTED).resolve("10.0.0.1", xff) == "10.0.0.1"


def test_garbage_beyond_the_first_untrusted_hop_does_not_matter() -> None:
    assert ClientIP(TRUSTED).resolve("10.0.0.1", "garbage, 198.51.100.1") == "198.51.100.1"


def test_an_endless_chain_is_not_walked_to_its_end() -> None:
    xff = ",".join(["198.51.100.1"] + ["10.0.0.2"] * 10_000)
    assert ClientIP(TRUSTED).resolve("10.0.0.1", xff) == "10.0.0.2"


def test_bad_trusted_cidr_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        ClientIP(["10.0.0.0/8", "not-a-network"])
    assert caught.value.setting == "trusted_proxies"
    assert "entry 2" in str(caught.value)


def _strings_reachable(root: object, depth: int = 4) -> set[str]:
    """Every str an attacker with a heap dump finds within ``depth`` references of ``root``
    (attributes, containers, the caches of functools wrappers)."""
    seen: set[int] = set()
    found: set[str] = set()
    frontier = [root]
    for _ in range(depth):
        nxt = []
        for obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, str):
                found.add(obj)
                continue
            nxt.extend(gc.get_referents(obj))
        frontier = nxt
    return found | {o for o in frontier if isinstance(o, str)}


@pytest.mark.parametrize(
    ("peer", "xff"),
    [("10.0.0.1", "203.0.113.77"), ("203.0.113.77", None), ("10.0.0.1", "10.0.0.9, 203.0.113.77")],
    ids=["behind-a-proxy", "direct", "two-proxies"],
)
def test_a_viewers_address_is_not_kept_after_its_request(peer: str, xff: str | None) -> None:
    """The privacy register says an IP address lives only while its report is processed: a
    heap dump of the resolver after the requests finds no viewer's address (only the
    operator's proxies, which it may remember)."""
    resolver = ClientIP(["10.0.0.0/8"])
    for _ in range(3):
        assert resolver.resolve(peer, xff) == "203.0.113.77"
    held = _strings_reachable(resolver)
    assert not any("203.0.113.77" in s for s in held)


@pytest.mark.parametrize(
    ("peer", "xff"),
    [("10.0.0.1", "2001:DB8:9:0:0:0:0:77"), ("2001:db8:9::77", None)],
    ids=["ipv6-behind-a-proxy", "ipv6-direct"],
)
def test_a_viewers_ipv6_address_is_not_kept_after_its_request(peer: str, xff: str | None) -> None:
    """The same attack on the IPv6 fast path (inet_pton/inet_ntop): neither the text the
    viewer sent nor its canonical form is reachable from the resolver afterwards."""
    resolver = ClientIP(["10.0.0.0/8"])
    for _ in range(3):
        assert resolver.resolve(peer, xff) == "2001:db8:9::77"
    held = _strings_reachable(resolver)
    assert not any("2001:db8:9" in s.lower() for s in held)


_OCTET = st.one_of(
    st.integers(0, 255).map(str),  # canonical
    st.integers(0, 999).map(str),  # out of range
    st.integers(0, 99).map(lambda n: f"0{n}"),  # a leading zero (octal in some parsers)
    st.sampled_from(["", "0x1", " 1", "1 ", "-1", "1\x00"]),
)
_HEXTET = st.one_of(
    st.integers(0, 0xFFFF).map(lambda n: f"{n:x}"),
    st.integers(0, 0xFFFF).map(lambda n: f"{n:04X}"),  # upper case, leading zeros
    st.just("0"),
    st.sampled_from(["", "00000", "g", "12345"]),
)
_V6 = st.one_of(
    st.lists(_HEXTET, min_size=1, max_size=9).map(":".join),  # with runs of "" as ::
    st.integers(0, 2**128 - 1).map(lambda n: str(ip_address(n.to_bytes(16, "big")))),
    st.integers(0, 2**32 - 1).map(lambda n: f"::{n >> 16:x}:{n & 0xFFFF:x}"),  # ::/96
    st.integers(0, 2**32 - 1).map(lambda n: f"::ffff:{n >> 16:x}:{n & 0xFFFF:x}"),  # mapped
    st.sampled_from(["::", "::1", "1::", "fe80::1%eth0", "[2001:db8::1]:443", "1:0:0:1::1"]),
)
_ENTRY = st.one_of(
    _V6,
    st.lists(_OCTET, min_size=3, max_size=5).map(".".join),
    st.lists(_OCTET, min_size=4, max_size=4).map(lambda o: " " + ".".join(o) + " "),
    st.lists(_OCTET, min_size=4, max_size=4).map(lambda o: ".".join(o) + ":8080"),
    st.sampled_from(["10.1.2.3", "192.168.1.10", "192.168.1.11", "::ffff:10.1.2.3"]),
    st.sampled_from(["2001:db8:100::1", "2001:DB8:100:0:0:0:0:1", "2001:db8:101::1"]),
)


@given(entry=_ENTRY)
@settings(max_examples=1000)
def test_the_fast_paths_read_every_entry_as_ipaddress_does(entry: str) -> None:
    """The fast paths (inet_pton, inet_ntop) and the parser of record (ipaddress) agree on
    whether an entry is an address, what its text is and whether it is a trusted proxy."""
    resolver = ClientIP(TRUSTED)
    expected = None
    parsed = _parse(entry)
    if parsed is not None:
        trusted = any(parsed in ip_network(n) for n in TRUSTED)
        expected = (str(parsed), trusted)
    assert resolver._hop(entry) == expected
