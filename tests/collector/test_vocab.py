"""Error codes, event types and states reduced to the players' vocabularies."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from collector import cmcd
from collector.vocab import (
    ERROR_CODES,
    HLSJS_ERROR_DETAILS,
    OTHER,
    SHAKA_ERROR_CODES,
    error_code,
    event_type,
    player_state,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "cmcd"


def fixture_events() -> list[tuple[str | None, cmcd.CmcdEvent]]:
    """Every event of the captures, with the player its report URL names (or None)."""
    events = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            request = json.loads(line)
            player = parse_qs(urlsplit(request["path"]).query).get("player", [None])[0]
            events.extend((player, ev) for ev in cmcd.parse(request["body"]).events)
    return events


def test_every_code_event_and_state_in_the_captures_survives() -> None:
    with_player = fixture_events()
    events = [ev for _, ev in with_player]
    codes = {(player, ev.ec) for player, ev in with_player if ev.ec is not None}
    # what the captures hold; each must survive (dash.js's number under its own name)
    assert codes == {(None, "manifestLoadError"), ("dash.js", "25")}
    assert {error_code(c, p) for p, c in codes} == {"manifestLoadError", "dash-25"}
    assert {event_type(ev.e) for ev in events} == {ev.e for ev in events}
    assert {player_state(ev.sta) for ev in events} == {ev.sta for ev in events}


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("manifestLoadError", id="hlsjs-manifest"),
        pytest.param("fragLoadError", id="hlsjs-frag"),
        pytest.param("bufferStalledError", id="hlsjs-stall"),
        pytest.param("1001", id="shaka-bad-http-status"),
        pytest.param("3016", id="shaka-video-error"),
        pytest.param("10010", id="shaka-ads"),
        pytest.param("MEDIA_ERR_NETWORK", id="media-error-name"),
        pytest.param("MEDIA_ERR_SRC_NOT_SUPPORTED", id="media-error-src"),
        pytest.param("MEDIA_ERR_UNKNOWN", id="snippet-unknown-media-error"),
        pytest.param("3", id="media-error-code"),
        pytest.param("vjs-4", id="videojs"),
        pytest.param("dash-27", id="dashjs-download"),
        pytest.param("dash-111", id="dashjs-protection"),
        pytest.param("404", id="http-404"),
        pytest.param("599", id="http-599"),
    ],
)
def test_known_codes_are_kept(code: str) -> None:
    assert error_code(code) == code


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("bob@example.com", id="email"),
        pytest.param("203.0.113.7", id="ip"),
        pytest.param("4915112345678", id="digits"),
        pytest.param("9f3c2a7e-1b4d-4e8f-a0c2-7d5e6f8a9b0c", id="uuid"),
        pytest.param("https://x.example/?t=1", id="url"),
        pytest.param("1099", id="not-a-shaka-code"),
        pytest.param("600", id="not-an-http-status"),
        pytest.param("vjs-6", id="not-a-videojs-code"),
        pytest.param("dash-30", id="not-a-dashjs-code"),
        pytest.param("ManifestLoadError", id="wrong-case"),
        pytest.param("boom", id="free-word"),
        pytest.param("", id="empty"),
    ],
)
def test_anything_else_is_other(code: str) -> None:
    assert error_code(code) == OTHER


def test_the_lists_have_the_sizes_of_their_sources() -> None:
    assert len(HLSJS_ERROR_DETAILS) == 53  # hls.js 1.7.4's ErrorDetails enum
    assert len(SHAKA_ERROR_CODES) == 194  # shaka.util.Error.Code, shaka-player 5.2
    assert all(c.isdigit() and 1000 <= int(c) <= 10010 for c in SHAKA_ERROR_CODES)
    assert "(other)" not in ERROR_CODES


@pytest.mark.parametrize(
    ("kind", "kept"),
    [
        pytest.param("ps", "ps", id="play-state"),
        pytest.param("rr", "rr", id="response-received"),
        pytest.param("abe", "abe", id="ad-break-end"),
        pytest.param("f93c2a7e-1b4d", OTHER, id="token-uuid"),
        pytest.param("x4915112345678", OTHER, id="token-digits"),
    ],
)
def test_event_types(kind: str, kept: str) -> None:
    assert event_type(kind) == kept


@pytest.mark.parametrize(
    ("state", "kept"),
    [
        pytest.param("p", "p", id="playing"),
        pytest.param("w", "w", id="waiting"),
        pytest.param(None, None, id="absent"),
        pytest.param("fd00:7b7b::4321", OTHER, id="token-ipv6"),
    ],
)
def test_player_states(state: str | None, kept: str | None) -> None:
    assert player_state(state) == kept
