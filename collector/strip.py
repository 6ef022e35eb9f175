"""The strip step: a request's identifying data becomes coarse classes, then is forgotten.

``Stripper.strip(ip, ua)`` keeps the country of the IP address and the classes of the
user agent; the caller drops the address and user agent right after (they still go into
the viewer key, computed from the request, never from a ``Stripped``). ``reduce_url``
keeps only the host of a segment URL (an ``rr`` event's ``url`` may carry tokens), and
``player_from_query`` maps the report URL's ``?player=`` to a fixed set.

``screen_events`` reduces what a client typed in each event: the error code, event type
and state to the players' vocabularies (``collector/vocab.py``; dash.js's bare-number codes
as ``dash-N``, its error event with a code as the failure it is), the stream name through
the identifier screen (``collector/screen.py``) unless the account declared it; ``sid``
and ``url`` are dropped (the session handle was made in the dedupe step before). Every
value not kept as sent is counted in ``streamtally_values_screened_total{field,reason}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from collector.accounts import Account
from collector.cmcd import CmcdEvent
from collector.geo import CountryLookup
from collector.handover import UNKNOWN, Dimensions
from collector.metrics import VALUES_SCREENED
from collector.screen import identifier_in
from collector.useragent import classify_ua
from collector.vocab import OTHER, error_code, event_type, player_state

REDACTED = "(redacted)"  # the stream name of a report whose cid was screened out
MAX_DIMENSIONS = 65536  # distinct Dimensions a Stripper keeps (coarse classes: a few thousand)
MAX_STREAM_CHARS = 128  # CTA-5004: cid is at most 128 characters

PLAYERS: frozenset[str] = frozenset({"hls.js", "shaka", "dash.js", "video.js", "html5"})
_PLAYER_ALIASES = {
    "hlsjs": "hls.js",
    "hls": "hls.js",
    "shaka-player": "shaka",
    "shakaplayer": "shaka",
    "dashjs": "dash.js",
    "dash": "dash.js",
    "videojs": "video.js",
    "video-js": "video.js",
    "video": "html5",
}
_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]{0,251}[a-z0-9_])?")


@dataclass(frozen=True, slots=True)
class Stripped:
    """What is left of a request after strip: no IP, no user agent, no header."""

    country: str
    device: str
    os: str
    browser: str
    bot: str | None

    def dimensions(self, player: str = UNKNOWN) -> Dimensions:
        """These classes as the hand-over's Dimensions, with the player from the URL."""
        return Dimensions(
            country=self.country,
            device=self.device,
            os=self.os,
            browser=self.browser,
            player=player,
        )


class Stripper:
    """Turns (IP, user agent) into a ``Stripped`` with the country lookup given."""

    def __init__(self, countries: CountryLookup) -> None:
        self._countries = countries
        # Each combination of classes made once: Dimensions is frozen (dear to build) and
        # its key is coarse classes only (country, device, OS, browser, player), never an
        # address or a user agent. Bounded: cleared if it ever holds MAX_DIMENSIONS.
        self._dimensions: dict[tuple[str, str, str, str, str], Dimensions] = {}

    def strip(self, ip: str, ua: str) -> Stripped:
        ua_class = classify_ua(ua)
        return Stripped(
            country=self._countries.country(ip),
            device=ua_class.device,
            os=ua_class.os,
            browser=ua_class.browser,
            bot=ua_class.bot,
        )

    def dimensions(self, ip: str, ua: str, player: str = UNKNOWN) -> Dimensions:
        """``strip(ip, ua).dimensions(player)``, without building the ``Stripped``."""
        ua_class = classify_ua(ua)
        key = (self._countries.country(ip), ua_class.device, ua_class.os, ua_class.browser, player)
        dims = self._dimensions.get(key)
        if dims is None:
            if len(self._dimensions) >= MAX_DIMENSIONS:
                self._dimensions.clear()
            country, device, os, browser, _ = key
            dims = self._dimensions[key] = Dimensions(country, device, os, browser, player)
        return dims


def reduce_url(url: str | None) -> str | None:
    """The host of an absolute URL, lowercased, without userinfo, port, path or query;
    None if there is none or it is not a valid host name or IP literal."""
    if not url:
        return None
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.rstrip(".")
    if _HOSTNAME.fullmatch(host) and not host.replace(".", "").isdigit():
        return None if identifier_in(host) else host
    return None  # an IP literal, or not a host name


def player_from_query(value: str | None) -> str:
    """``?player=`` of the report URL as one of PLAYERS, else ``(unknown)``."""
    if not value:
        return UNKNOWN
    name = value.strip().lower()
    if name in PLAYERS:
        return name
    player = _PLAYER_ALIASES.get(name)
    if player is None:
        VALUES_SCREENED.labels("player", "unlisted").inc()
        return UNKNOWN
    return player


def stream_name(cid: str | None, account: Account) -> str:
    """The stream name kept for a ``cid``: as sent if the account declares it or it passes
    the identifier screen; ``(unknown)`` if absent; else ``(redacted)``."""
    if not cid:
        return UNKNOWN
    if account.declares_stream(cid):
        return cid
    reason = "length" if len(cid) > MAX_STREAM_CHARS else identifier_in(cid)
    if reason is None:
        return cid
    VALUES_SCREENED.labels("stream", reason).inc()
    return REDACTED


def screen_events(events: Iterable[CmcdEvent], account: Account, player: str = UNKNOWN) -> None:
    """Reduce each event's client text in place (see the module doc). ``player``: the
    report's player (``player_from_query``), for the dialect of dash.js (below)."""
    dashjs = player == "dash.js"
    streams: dict[str | None, str] = {}  # one report's events mostly share one cid
    for ev in events:
        cid = ev.cid
        kept = streams.get(cid)
        if kept is None:
            kept = streams[cid] = stream_name(cid, account)
        ev.cid = kept
        ev.sid = ev.url = None
        kind = event_type(ev.e)
        if kind is OTHER:
            VALUES_SCREENED.labels("event_type", "unlisted").inc()
        ev.e = kind
        if ev.sta is not None:
            state = player_state(ev.sta)
            if state is OTHER:
                VALUES_SCREENED.labels("player_state", "unlisted").inc()
            ev.sta = state
        if ev.ec is not None:
            code = error_code(ev.ec, player)
            if code is OTHER:
                VALUES_SCREENED.labels("error_code", "unlisted").inc()
            ev.ec = code
            if dashjs and kind == "e" and ev.sta != "f":
                # dash.js 5 has no fatal state: its ERROR event (what stops it) goes out as
                # an ``e`` event with the code, in whatever state it was. That is its
                # playback failure, as the snippet's dash.js adapter counts it too.
                ev.sta = "f"
