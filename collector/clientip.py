"""Which address is the client: the peer, or what trusted proxies say in X-Forwarded-For.

Without trusted proxies the peer address is the client and X-Forwarded-For is ignored
(anyone can write it). With them, a request whose peer is a trusted proxy is traced back
through X-Forwarded-For from the right, skipping trusted hops: the first untrusted hop is
the client. If every hop is trusted, the left-most one is. An entry that is not an IP
address means the chain cannot be believed, and the peer is used. Several
X-Forwarded-For headers are joined with "," by the caller, as RFC 9110 allows.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import TypeAlias

from collector.errors import ConfigError

_Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_HOPS = 32  # a longer chain is not walked past this many entries from the right
# Trusted hops (the operator's own proxies) are remembered by their text, in memory only;
# a viewer's address is parsed each time and never kept past its request (privacy register).
_PROXY_CACHE = 1024
_HEX_COLON = "0123456789abcdefABCDEF:"
_V6_LOW = bytes(10)  # ::/80 holds ::/96 (compatible) and ::ffff:0:0/96 (mapped)


def _parse(text: str) -> _Address | None:
    """An XFF entry: bare address, ``v4:port`` or ``[v6]:port``; IPv4-mapped -> IPv4."""
    text = text.strip()
    if not text:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # v4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return None
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
    return address


class ClientIP:
    """Resolves the client address of a request from its peer and X-Forwarded-For."""

    def __init__(self, trusted_cidrs: Sequence[str]) -> None:
        networks: list[_Network] = []
        for position, cidr in enumerate(trusted_cidrs, 1):
            try:
                networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                message = f"entry {position} is not a CIDR network"
                raise ConfigError("trusted_proxies", message) from None
        self._networks = tuple(networks)
        # IPv4 networks as (network, mask) integers: the fast path's membership test
        self._v4 = tuple(
            (int(n.network_address), int(n.netmask))
            for n in networks
            if isinstance(n, ipaddress.IPv4Network)
        )
        self._v6 = tuple(
            (int(n.network_address), int(n.netmask))
            for n in networks
            if isinstance(n, ipaddress.IPv6Network)
        )
        self._proxies: dict[str, str] = {}  # text of a trusted hop -> its canonical form

    def _hop(self, text: str) -> tuple[str, bool] | None:
        """(canonical address, trusted?) of one peer or X-Forwarded-For entry; None if invalid.
        Only trusted hops are remembered: they are proxies, not viewers."""
        known = self._proxies.get(text)
        if known is not None:
            return known, True
        # Fast path, most entries: a bare IPv4 address. inet_pton takes only the canonical
        # dotted quad (four decimal octets, no leading zeros), which is what ipaddress
        # accepts too and how it prints it: the text is its own canonical form.
        bare = text.strip()
        try:
            packed = socket.inet_pton(socket.AF_INET, bare)
        except (OSError, ValueError):
            pass
        else:
            value = int.from_bytes(packed, "big")
            if not any(value & mask == network for network, mask in self._v4):
                return bare, False
        # And a bare IPv6 address in hex and colons (no embedded IPv4, no zone), outside
        # ::/80 (mapped and compatible forms): inet_ntop then prints what ipaddress prints
        # (RFC 5952: lower case, no leading zeros, the first longest run of two or more
        # zero groups as ::).
        if ":" in bare and bare.strip(_HEX_COLON) == "":
            try:
                packed = socket.inet_pton(socket.AF_INET6, bare)
            except (OSError, ValueError):
                return None  # ipaddress refuses what inet_pton does, for these characters
            if packed[:10] != _V6_LOW:
                value = int.from_bytes(packed, "big")
                if not any(value & mask == network for network, mask in self._v6):
                    return socket.inet_ntop(socket.AF_INET6, packed), False
        address = _parse(text)
        if address is None:
            return None
        canonical = str(address)
        if not self._trusted(address):
            return canonical, False
        if len(self._proxies) >= _PROXY_CACHE:
            self._proxies.clear()
        self._proxies[text] = canonical
        return canonical, True

    def _trusted(self, address: _Address) -> bool:
        return any(address in network for network in self._networks)

    def resolve(self, peer: str | None, xff: str | None) -> str:
        """The client's address as text, or "" if there is none (e.g. a Unix socket)."""
        if not self._networks:
            if peer and peer[:7].lower() == "::ffff:" and "." in peer:
                return peer[7:]
            return peer or ""
        if not peer:
            return ""
        verdict = self._hop(peer)
        if verdict is None:
            return peer
        peer_text, peer_trusted = verdict
        if not xff or not peer_trusted:
            return peer_text
        client = peer_text
        for hop in reversed(xff.split(",")[-_MAX_HOPS:]):
            verdict = self._hop(hop)
            if verdict is None:
                return peer_text
            client, trusted = verdict
            if not trusted:
                break
        return client
