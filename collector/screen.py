"""The identifier screen: free text shaped like an identifier is never kept.

A value a client sends as text (a stream name, a host) is refused when anywhere in it there
is something shaped like an e-mail address, an IP address (v4 or v6), a URL with a query
or user info, a run of 7 or more digits (a phone, customer or card number; a numeric IP),
or a UUID (with or without hyphens; also any run of 32 hex digits). ``identifier_in``
names which of ``REASONS`` it found, or None.

The screen errs on the side of refusing: ``match-20240115`` (8 digits) is refused too. A
publisher who names streams that way declares them with the account (exact names, or a
pattern like ``match-*``); declared names are not screened (``Account.declares_stream``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

REASONS: Final = ("email", "ip", "url", "digits", "uuid")

_HEX = "[0-9A-Fa-f]"
# One pattern per kind, each tried only when the value holds the character it needs: a
# search over text without an "@" (say) would otherwise retry at every position.
_URL: Final = re.compile(
    r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://[^/\s?#@]*+@|[?&;][^=&\s?#/]++=", re.ASCII
)
_EMAIL: Final = re.compile(r"[^\s@]@[^\s@]*?[^\s@.]\.[^\s@.]", re.ASCII)
_UUID: Final = re.compile(
    rf"{_HEX}{{8}}-?{_HEX}{{4}}-?{_HEX}{{4}}-?{_HEX}{{4}}-?{_HEX}{{12}}", re.ASCII
)
_IPV4: Final = re.compile(r"(?<![0-9])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9])", re.ASCII)
_IPV6: Final = re.compile(r"(?<![0-9A-Fa-f.:%])[0-9A-Fa-f.]*+:[0-9A-Fa-f.:%]*+", re.ASCII)
_DIGITS: Final = re.compile(r"[0-9]{7}|\+[0-9](?:[ ().-]?[0-9]){6}", re.ASCII)
_ZONE: Final = re.compile(r"%.*")
_GROUP: Final = re.compile(r"[0-9A-Fa-f]{1,4}")


def identifier_in(value: str) -> str | None:
    """The kind of identifier found anywhere in ``value`` (one of REASONS), or None.

    Linear in the length of ``value``: a few C-level scans and gated searches."""
    if ("://" in value or "=" in value) and _URL.search(value):
        return "url"
    if "@" in value and _EMAIL.search(value):
        return "email"
    if len(value) >= 32 and _UUID.search(value):
        return "uuid"
    if "." in value and _IPV4.search(value):
        return "ip"
    if ":" in value and any(_is_ipv6(m.group()) for m in _IPV6.finditer(value)):
        return "ip"
    if _DIGITS.search(value):
        return "digits"
    if not value.isascii() and any(c.isdigit() for c in value if not c.isascii()):
        digits = "".join(str(int(c)) if c.isdigit() else " " for c in value)  # other scripts
        if _DIGITS.search(digits):
            return "digits"
    return None


def _is_ipv6(text: str) -> bool:
    """An IPv6 address with three or more groups (``2001:db8::1``, ``fe80::a1%eth0`` ...;
    not ``::1`` or ``live::main``), or four or more colon-separated hex groups (a MAC
    address, a cut-off IPv6 address)."""
    bare = _ZONE.sub("", text)
    groups = sum(1 for part in bare.split(":") if _GROUP.fullmatch(part))
    if groups >= 4:
        return True
    if groups < 3:
        return False
    for candidate in (bare, bare.strip(".:")):
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        return True
    return False
