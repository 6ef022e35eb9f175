"""The strip step keeps coarse classes and nothing of the address or user agent."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import REGISTRY

from collector.accounts import Account
from collector.cmcd import CmcdEvent
from collector.geo import load_country_db
from collector.handover import UNKNOWN, Dimensions
from collector.strip import (
    MAX_DIMENSIONS,
    PLAYERS,
    REDACTED,
    Stripped,
    Stripper,
    player_from_query,
    reduce_url,
    screen_events,
)
from collector.useragent import BROWSERS, DEVICES, OSES
from collector.vocab import OTHER

CANARY_IP = "193.0.0.77"
CANARY_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1 canary-7f3a9c"
)


@pytest.fixture(scope="module")
def stripper() -> Stripper:
    return Stripper(load_country_db(None))


@pytest.mark.parametrize(
    ("ip", "ua", "expected"),
    [
        pytest.param(
            CANARY_IP,
            CANARY_UA,
            Stripped(country="NL", device="mobile", os="iOS", browser="Safari", bot=None),
            id="iphone-in-nl",
        ),
        pytest.param(
            "2001:4860:4860::8888",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "HeadlessChrome/156.0.0.0 Safari/537.36",
            Stripped(country="US", device="desktop", os="Linux", browser="Chrome", bot=None),
            id="headless-chrome-v6",
        ),
        pytest.param(
            "10.0.0.1",
            "curl/8.5.0",
            Stripped(country=UNKNOWN, device="other", os="Other", browser="Other", bot="bot_ua"),
            id="curl-from-private",
        ),
        pytest.param(
            "",
            "",
            Stripped(country=UNKNOWN, device="other", os="Other", browser="Other", bot="empty_ua"),
            id="nothing-known",
        ),
    ],
)
def test_strip_keeps_the_classes(stripper: Stripper, ip: str, ua: str, expected: Stripped) -> None:
    assert stripper.strip(ip, ua) == expected


def test_stripped_holds_nothing_of_the_address_or_user_agent(stripper: Stripper) -> None:
    stripped = stripper.strip(CANARY_IP, CANARY_UA)
    text = repr(stripped) + repr(stripped.dimensions("hls.js"))
    for needle in (CANARY_IP, "193.0.0", CANARY_UA, "canary-7f3a9c", "iPhone OS 18_1"):
        assert needle not in text
    assert {f.name for f in dataclasses.fields(Stripped)} == {
        "country",
        "device",
        "os",
        "browser",
        "bot",
    }


def test_stripped_becomes_handover_dimensions(stripper: Stripper) -> None:
    stripped = stripper.strip(CANARY_IP, CANARY_UA)
    assert stripped.dimensions("shaka") == Dimensions(
        country="NL", device="mobile", os="iOS", browser="Safari", player="shaka"
    )
    assert stripped.dimensions().player == UNKNOWN


@pytest.mark.parametrize(
    ("ip", "ua", "player"),
    [
        pytest.param(CANARY_IP, CANARY_UA, "shaka", id="iphone-in-nl-shaka"),
        pytest.param("2001:4860:4860::8888", "Mozilla/5.0 (X11; Linux x86_64)", UNKNOWN, id="v6"),
        pytest.param("10.0.0.1", "curl/8.5.0", "hls.js", id="curl-from-private"),
        pytest.param("", "", UNKNOWN, id="nothing-known"),
    ],
)
def test_dimensions_are_those_of_strip(stripper: Stripper, ip: str, ua: str, player: str) -> None:
    expected = stripper.strip(ip, ua).dimensions(player)
    first = stripper.dimensions(ip, ua, player)
    assert first == expected
    assert stripper.dimensions(ip, ua, player) is first  # made once per combination


def test_dimensions_kept_are_bounded_and_hold_no_address_or_user_agent() -> None:
    stripper = Stripper(load_country_db(None))
    for player in (*PLAYERS, UNKNOWN):
        stripper.dimensions(CANARY_IP, CANARY_UA, player)
    kept = stripper._dimensions
    assert len(kept) == len(PLAYERS) + 1
    text = repr(kept)
    for needle in (CANARY_IP, "193.0.0", CANARY_UA, "canary-7f3a9c", "iPhone OS 18_1"):
        assert needle not in text
    kept.update({(str(i), "", "", "", ""): Dimensions() for i in range(MAX_DIMENSIONS)})
    stripper.dimensions("", "curl/8.5.0", "shaka")  # a new combination clears the full dict
    assert len(kept) == 1


@pytest.mark.parametrize(
    ("url", "host"),
    [
        pytest.param("https://cdn.example.com/v/seg_12.m4s", "cdn.example.com", id="plain"),
        pytest.param(
            "https://CDN.Example.COM:8443/v/seg.m4s?token=s3cr3t&sid=abc#frag",
            "cdn.example.com",
            id="case-port-query",
        ),
        pytest.param(
            "https://user:pass@edge-3.cdn.example.net/live/x.ts",
            "edge-3.cdn.example.net",
            id="userinfo",
        ),
        pytest.param("http://cdn.example.com./a.ts", "cdn.example.com", id="trailing-dot"),
        # an IP address is never kept, even a server's (the screen cannot tell whose it is)
        pytest.param("https://203.0.113.5/seg.ts", None, id="ipv4-host"),
        pytest.param("https://[2001:DB8::1]:443/seg.ts", None, id="ipv6-host"),
        pytest.param("https://bob-4915112345678.cdn.example/a.ts", None, id="digit-run-host"),
        pytest.param("//cdn.example.com/seg.ts", "cdn.example.com", id="scheme-relative"),
        pytest.param("/v/seg_12.m4s", None, id="relative-path"),
        pytest.param("seg_12.m4s", None, id="bare-file"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
        pytest.param("https://[2001:db8::1/seg.ts", None, id="broken-ipv6"),
        pytest.param("https://999.1.1.1/seg.ts", None, id="bad-ipv4"),
        pytest.param("https://exa mple.com/seg.ts", None, id="space-in-host"),
        pytest.param("https://bad_host!.com/seg.ts", None, id="punctuation-in-host"),
        pytest.param("https://" + "a" * 300 + ".com/", None, id="too-long"),
    ],
)
def test_reduce_url_keeps_only_the_host(url: str | None, host: str | None) -> None:
    assert reduce_url(url) == host


@pytest.mark.parametrize(
    ("value", "player"),
    [
        *[pytest.param(p, p, id=p) for p in sorted(PLAYERS)],
        pytest.param("HLS.JS", "hls.js", id="uppercase"),
        pytest.param(" shaka ", "shaka", id="whitespace"),
        pytest.param("hlsjs", "hls.js", id="alias-hlsjs"),
        pytest.param("shaka-player", "shaka", id="alias-shaka-player"),
        pytest.param("dashjs", "dash.js", id="alias-dashjs"),
        pytest.param("videojs", "video.js", id="alias-videojs"),
        pytest.param("jwplayer", UNKNOWN, id="other-player"),
        pytest.param("", UNKNOWN, id="empty"),
        pytest.param(None, UNKNOWN, id="absent"),
        pytest.param("hls.js<script>", UNKNOWN, id="garbage"),
    ],
)
def test_player_from_query_maps_to_the_fixed_set(value: str | None, player: str) -> None:
    assert player_from_query(value) == player
    assert player in PLAYERS | {UNKNOWN}


# ---- screen_events: client text reduced to vocabularies, stream names screened ------------


def event(**keys: object) -> CmcdEvent:
    return dataclasses.replace(CmcdEvent(line=1, e="ps", ts=1), **keys)


ACCOUNT = Account(
    "acc_1",
    "league",
    "ek_1",
    ("*",),
    streams=("final-4915112345678",),
    stream_patterns=("match-*", "cam-??"),
)


@pytest.mark.parametrize(
    ("cid", "kept"),
    [
        pytest.param("stream-42", "stream-42", id="ordinary"),
        pytest.param(None, UNKNOWN, id="absent"),
        pytest.param("bob@example.com", REDACTED, id="email"),
        pytest.param("203.0.113.7", REDACTED, id="ipv4"),
        pytest.param("x" * 129, REDACTED, id="too-long"),
        pytest.param("final-4915112345678", "final-4915112345678", id="declared-name"),
        pytest.param("match-20240115", "match-20240115", id="declared-pattern"),
        pytest.param(
            "match-9f3c2a7e-1b4d-4e8f-a0c2-7d5e6f8a9b0c",
            "match-9f3c2a7e-1b4d-4e8f-a0c2-7d5e6f8a9b0c",
            id="pattern-vouches-for-its-numbering",
        ),
        pytest.param("cam-12", "cam-12", id="question-marks"),
        pytest.param("cam-1234567", REDACTED, id="question-marks-count"),
        pytest.param("match-bob@example.com", REDACTED, id="pattern-star-no-at"),
        pytest.param("match-10.0.0.1", REDACTED, id="pattern-star-no-dot"),
        pytest.param("final-4915112345678 ", REDACTED, id="declared-is-exact"),
    ],
)
def test_stream_names_are_screened_unless_declared(cid: str | None, kept: str) -> None:
    ev = event(cid=cid, sid="9f3c2a7e", url="https://cdn.example/a.ts?t=1")
    screen_events([ev], ACCOUNT)
    assert (ev.cid, ev.sid, ev.url) == (kept, None, None)


def screened(field: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "streamtally_values_screened_total", {"field": field, "reason": reason}
        )
        or 0.0
    )


def test_every_screened_value_is_counted_by_field_and_reason() -> None:
    before = screened("stream", "email"), screened("error_code", "unlisted")
    events = [
        event(cid="bob@example.com", e="e", sta="f", ec="bob@example.com"),
        event(cid="bob@example.com", e="e", sta="f", ec="manifestLoadError"),
    ]
    screen_events(events, ACCOUNT)
    assert [(ev.cid, ev.ec) for ev in events] == [
        (REDACTED, OTHER),
        (REDACTED, "manifestLoadError"),
    ]
    # one count per screened value (a report's repeated cid is screened once)
    assert (screened("stream", "email"), screened("error_code", "unlisted")) == (
        before[0] + 1,
        before[1] + 1,
    )


@pytest.mark.parametrize(
    ("player", "e", "ec", "sta", "kept"),
    [
        pytest.param("dash.js", "e", "25", "s", ("dash-25", "f"), id="dashjs-error-is-its-failure"),
        pytest.param("dash.js", "t", "25", "s", ("dash-25", "s"), id="dashjs-code-on-a-heartbeat"),
        pytest.param("dash.js", "e", "dash-25", "p", ("dash-25", "f"), id="dashjs-adapter-name"),
        pytest.param("dash.js", "e", "999", "s", (OTHER, "f"), id="dashjs-unknown-code"),
        pytest.param("hls.js", "e", "25", "s", (OTHER, "s"), id="other-player-no-dialect"),
        pytest.param("shaka", "e", "1001", "p", ("1001", "p"), id="shaka-codes-unchanged"),
    ],
)
def test_dashjs_numeric_codes_and_error_events(
    player: str, e: str, ec: str, sta: str, kept: tuple[str, str]
) -> None:
    """dash.js 5 sends its error codes as bare numbers and has no fatal state: from dash.js
    a number is named as its own code (``dash-N``) and its error event is its failure."""
    ev = event(e=e, ec=ec, sta=sta)
    screen_events([ev], ACCOUNT, player)
    assert (ev.ec, ev.sta) == kept


@pytest.mark.parametrize(
    "ec",
    [
        pytest.param("4915112345678", id="phone-number"),
        pytest.param("1796551527288", id="timestamp"),
        pytest.param("2030113007", id="numeric-ip"),
        pytest.param("0025", id="padded"),
    ],
)
def test_a_number_as_error_code_cannot_carry_an_identifier(ec: str) -> None:
    """The attack: now that ``ec`` may be a bare integer, a page sends a phone number (or a
    user id) as dash.js's error code. Only dash.js's own codes are kept; anything else is
    ``(other)``."""
    ev = event(e="e", ec=ec, sta="s")
    screen_events([ev], ACCOUNT, "dash.js")
    assert ev.ec == OTHER


def test_tokens_are_reduced_to_cmcd_vocabularies() -> None:
    ev = event(e="fd00:7b7b::4321", sta="x4915112345678")
    screen_events([ev], ACCOUNT)
    assert (ev.e, ev.sta) == (OTHER, OTHER)


@pytest.mark.parametrize(
    "ua",
    [
        pytest.param("bob@example.com/1.0", id="email-as-product"),
        pytest.param("Mozilla/5.0 (bob@example.com) bob@example.com/1.0", id="email-in-comment"),
        pytest.param("Mozilla/5.0 (Linux; 4915112345678) 9f3c2a7e/1.0 Safari/1", id="digits"),
        pytest.param("Mozilla/5.0 (203.0.113.7 OS 1_0) AppleWebKit Mobile/1", id="ip-as-os"),
        pytest.param("Mozilla/5.0 (Windows NT 10.0) QzVictim/9.9", id="unknown-browser"),
    ],
)
def test_a_crafted_user_agent_cannot_choose_a_family(stripper: Stripper, ua: str) -> None:
    stripped = stripper.strip("193.0.0.1", ua)
    assert stripped.browser in BROWSERS
    assert stripped.os in OSES
    assert stripped.device in DEVICES
