"""Client IP -> ISO 3166-1 alpha-2 country, in memory, no network.

Bundled data: the ``iptocc`` package (MIT OR Apache-2.0), a Rust lookup table built from
the five Regional Internet Registries' public delegation statistics and released nightly
on PyPI. It gives the country a block is *registered* to, which for access networks
(where viewers are) is nearly always where it is used. Operators who want geolocation
data instead point ``geoip_db`` at an MMDB file (MaxMind GeoLite2-Country, DB-IP "IP to
Country Lite", ...), read with ``maxminddb``; honouring that file's licence (e.g. DB-IP's
CC BY 4.0 attribution) is then theirs.

Anything that is not a country (private, loopback, reserved, unallocated, the RIRs'
pseudo-codes ``EU``/``AP``, ``ZZ``, invalid input) is ``(unknown)``. Nothing here logs or
raises with an address in it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import maxminddb
from iptocc import country_code

from collector.errors import ConfigError
from collector.handover import UNKNOWN

ATTRIBUTION = (
    "Country data: iptocc (https://github.com/roniemartinez/IPToCC, MIT OR Apache-2.0), "
    "built from the public delegation statistics of the Regional Internet Registries "
    "(AFRINIC, APNIC, ARIN, LACNIC, RIPE NCC). An operator-supplied MMDB file "
    "(geoip_db) carries its own licence: DB-IP Lite data requires the attribution "
    "'IP Geolocation by DB-IP' with a link to https://db-ip.com (CC BY 4.0)."
)

# Two-letter codes that registries or databases use but that name no country.
_NOT_COUNTRIES = frozenset({"EU", "AP", "ZZ", "XX", "A1", "A2", "O1"})
_MAPPED_V4 = "::ffff:"


class CountryLookup(Protocol):
    """Maps an IP address (text) to an ISO 3166-1 alpha-2 code or ``(unknown)``."""

    def country(self, ip: str) -> str: ...


def _clean(code: object) -> str:
    """A database's code if it is a country code, else (unknown)."""
    if (
        isinstance(code, str)
        and len(code) == 2
        and code.isascii()
        and code.isalpha()
        and code.isupper()
        and code not in _NOT_COUNTRIES
    ):
        return code
    return UNKNOWN


def _unmap(ip: str) -> str:
    """``::ffff:192.0.2.1`` (a dual-stack socket's view of an IPv4 peer) -> ``192.0.2.1``."""
    if ip[:7].lower() == _MAPPED_V4 and "." in ip:
        return ip[7:]
    return ip


class BundledCountries:
    """The data shipped with the ``iptocc`` package, embedded in its extension module."""

    def country(self, ip: str) -> str:
        if not ip:
            return UNKNOWN
        return _clean(country_code(_unmap(ip)))


class MMDBCountries:
    """An operator's MMDB file (GeoLite2-Country, DB-IP lite, or any with ``country``)."""

    def __init__(self, path: Path) -> None:
        try:
            # The C extension over a memory map: ~1 us a lookup against ~20 us for the
            # pure-Python MODE_MEMORY reader; the file is read once into the page cache.
            self._reader = maxminddb.open_database(os.fspath(path), _mode())
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(
                "geoip_db", f"cannot be read as an MMDB file ({type(exc).__name__})"
            ) from None
        self._v6 = self._reader.metadata().ip_version == 6
        self._check_shape()

    def _check_shape(self) -> None:
        """Refuse a file that has no country field anywhere (an ASN database, say)."""
        probes = ("8.8.8.8", "1.1.1.1", "193.0.0.1", "2001:4860:4860::8888")
        records = [self._get(ip) for ip in probes]
        found = [r for r in records if r is not None]
        if found and not any(_code_of(r) != UNKNOWN for r in found):
            raise ConfigError("geoip_db", "has no country.iso_code in its records")

    def _get(self, ip: str) -> Any:
        if not self._v6 and ":" in ip:
            return None
        try:
            return self._reader.get(ip)
        except ValueError:  # not an IP address
            return None

    def country(self, ip: str) -> str:
        if not ip:
            return UNKNOWN
        record = self._get(_unmap(ip))
        return _code_of(record) if record is not None else UNKNOWN

    def close(self) -> None:
        self._reader.close()


def _code_of(record: Any) -> str:
    """``country.iso_code``, else ``registered_country.iso_code``, of a GeoIP2-style record."""
    if not isinstance(record, dict):
        return UNKNOWN
    for key in ("country", "registered_country"):
        part = record.get(key)
        if isinstance(part, dict):
            code = _clean(part.get("iso_code"))
            if code != UNKNOWN:
                return code
    # Some community databases put a flat code at the top level.
    return _clean(record.get("country_code"))


def _mode() -> int:
    ext = getattr(maxminddb, "extension", None)
    if ext is not None and hasattr(ext, "Reader"):
        return int(maxminddb.MODE_MMAP_EXT)
    return int(maxminddb.MODE_MEMORY)


def load_country_db(path: Path | None) -> CountryLookup:
    """The bundled data (``path`` None) or an operator's MMDB file at ``path``."""
    if path is None:
        return BundledCountries()
    return MMDBCountries(path)
