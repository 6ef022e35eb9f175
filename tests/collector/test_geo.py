"""IP -> country: the bundled data and an operator's MMDB file share one contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]

from collector.errors import ConfigError
from collector.geo import ATTRIBUTION, CountryLookup, load_country_db
from collector.handover import UNKNOWN

# Addresses held by the same operator, registered in the same country, for decades.
WELL_KNOWN = [
    pytest.param("8.8.8.8", "US", id="google-dns-v4"),
    pytest.param("2001:4860:4860::8888", "US", id="google-dns-v6"),
    pytest.param("9.9.9.9", "US", id="quad9"),
    pytest.param("193.0.0.1", "NL", id="ripe-ncc-v4"),
    pytest.param("2001:67c:2e8::1", "NL", id="ripe-ncc-v6"),
    pytest.param("::ffff:8.8.8.8", "US", id="ipv4-mapped-peer"),
]

NOT_A_COUNTRY = [
    pytest.param("10.1.2.3", id="rfc1918-10"),
    pytest.param("192.168.0.1", id="rfc1918-192"),
    pytest.param("172.16.5.4", id="rfc1918-172"),
    pytest.param("127.0.0.1", id="loopback-v4"),
    pytest.param("::1", id="loopback-v6"),
    pytest.param("fe80::1", id="link-local-v6"),
    pytest.param("100.64.0.1", id="cgnat"),
    pytest.param("192.0.2.1", id="documentation-v4"),
    pytest.param("2001:db8::1", id="documentation-v6"),
    pytest.param("224.0.0.1", id="multicast"),
    pytest.param("0.0.0.0", id="unspecified"),
    pytest.param("", id="empty"),
    pytest.param("not an ip", id="garbage"),
    pytest.param("1.2.3", id="truncated"),
    pytest.param("256.1.1.1", id="octet-out-of-range"),
    pytest.param("8.8.8.8:443", id="with-port"),
]


@pytest.fixture(scope="module")
def bundled() -> CountryLookup:
    return load_country_db(None)


@pytest.fixture(scope="module")
def operator_mmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GeoLite2-Country-shaped MMDB, small and made here."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-Country",
        languages=["en"],
        description="StreamTally test",
    )
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "US"}})
    writer.insert_network(IPSet(["193.0.0.0/21"]), {"country": {"iso_code": "NL"}})
    # Only registered_country (as GeoLite2 has for some anycast/satellite ranges).
    writer.insert_network(IPSet(["2001:4860::/32"]), {"registered_country": {"iso_code": "US"}})
    # A network this file places somewhere the bundled data would not: the file wins.
    writer.insert_network(IPSet(["9.9.9.0/24"]), {"country": {"iso_code": "CH"}})
    writer.insert_network(IPSet(["2.2.2.0/24"]), {"country": {"iso_code": "EU"}})
    path = tmp_path_factory.mktemp("geo") / "country.mmdb"
    writer.to_db_file(str(path))
    return path


@pytest.mark.parametrize(("ip", "country"), WELL_KNOWN)
def test_bundled_data_maps_well_known_addresses(
    bundled: CountryLookup, ip: str, country: str
) -> None:
    assert bundled.country(ip) == country


@pytest.mark.parametrize("ip", NOT_A_COUNTRY)
def test_bundled_data_has_no_country_for_non_public_or_invalid(
    bundled: CountryLookup, ip: str
) -> None:
    assert bundled.country(ip) == UNKNOWN


def test_bundled_data_never_answers_a_pseudo_country(bundled: CountryLookup) -> None:
    # 139.191.0.0/16 (European Commission) is registered as "EU" at RIPE NCC.
    scan = [f"{a}.{b}.1.1" for a in range(1, 224) for b in range(256)] + ["139.191.0.1"]
    seen = {bundled.country(ip) for ip in scan}
    assert len(seen) > 150
    assert not {"EU", "AP", "ZZ"} & seen
    assert all(c == UNKNOWN or (len(c) == 2 and c.isascii() and c.isupper()) for c in seen)


@pytest.mark.parametrize(
    ("raw", "country"),
    [
        pytest.param("DE", "DE", id="country"),
        pytest.param("EU", UNKNOWN, id="eu"),
        pytest.param("AP", UNKNOWN, id="asia-pacific"),
        pytest.param("ZZ", UNKNOWN, id="zz"),
        pytest.param("de", UNKNOWN, id="lowercase"),
        pytest.param("DEU", UNKNOWN, id="alpha-3"),
        pytest.param(None, UNKNOWN, id="miss"),
    ],
)
def test_bundled_codes_that_name_no_country_become_unknown(
    monkeypatch: pytest.MonkeyPatch, raw: str | None, country: str
) -> None:
    monkeypatch.setattr("collector.geo.country_code", lambda ip: raw)
    assert load_country_db(None).country("192.0.2.1") == country


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        pytest.param("8.8.8.8", "US", id="country-v4"),
        pytest.param("193.0.7.255", "NL", id="country-v4-range-end"),
        pytest.param("2001:4860:4860::8888", "US", id="registered-country-v6"),
        pytest.param("::ffff:193.0.0.1", "NL", id="ipv4-mapped"),
        pytest.param("9.9.9.9", "CH", id="file-overrides-bundled"),
        pytest.param("2.2.2.2", UNKNOWN, id="pseudo-code-eu"),
        pytest.param("1.1.1.1", UNKNOWN, id="not-in-file"),
        pytest.param("10.0.0.1", UNKNOWN, id="private"),
        pytest.param("garbage", UNKNOWN, id="garbage"),
        pytest.param("", UNKNOWN, id="empty"),
    ],
)
def test_operator_mmdb_is_used_instead_of_bundled(
    operator_mmdb: Path, ip: str, country: str
) -> None:
    assert load_country_db(operator_mmdb).country(ip) == country


def test_ipv4_only_mmdb_answers_unknown_for_ipv6(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=4, database_type="DBIP-Country-Lite")
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "US"}})
    path = tmp_path / "v4.mmdb"
    writer.to_db_file(str(path))
    db = load_country_db(path)
    assert db.country("8.8.8.8") == "US"
    assert db.country("2001:4860:4860::8888") == UNKNOWN


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="missing-file"),
        pytest.param(b"", id="empty-file"),
        pytest.param(b"this is not a MaxMind DB" * 10, id="not-mmdb"),
    ],
)
def test_unreadable_mmdb_is_a_config_error_naming_the_setting(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "country.mmdb"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_country_db(path)
    assert caught.value.setting == "geoip_db"


def test_mmdb_without_country_field_is_refused(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"autonomous_system_number": 15169})
    path = tmp_path / "asn.mmdb"
    writer.to_db_file(str(path))
    with pytest.raises(ConfigError, match="geoip_db"):
        load_country_db(path)


def test_attribution_names_the_data_sources() -> None:
    assert "Regional Internet Registries" in ATTRIBUTION
    assert "DB-IP" in ATTRIBUTION
