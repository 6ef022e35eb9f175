"""The strip step: a request's identifying data becomes coarse classes, then is forgotten.

``Stripper.strip(ip, ua)`` keeps the country of the IP address and the classes of the
user agent; the caller drops the address and user agent right after (they still go into
the viewer key, computed from the request, never from a ``Stripped``). ``reduce_url``
keeps only the host of a segment URL (an ``rr`` event's ``url`` may carry tokens), and
``player_from_query`` maps the report URL's ``?player=`` to a fixed set.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from collector.geo import CountryLookup
from collector.handover import UNKNOWN, Dimensions
from collector.useragent import classify_ua

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

    def strip(self, ip: str, ua: str) -> Stripped:
        ua_class = classify_ua(ua)
        return Stripped(
            country=self._countries.country(ip),
            device=ua_class.device,
            os=ua_class.os,
            browser=ua_class.browser,
            bot=ua_class.bot,
        )


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
        return host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def player_from_query(value: str | None) -> str:
    """``?player=`` of the report URL as one of PLAYERS, else ``(unknown)``."""
    if not value:
        return UNKNOWN
    name = value.strip().lower()
    if name in PLAYERS:
        return name
    return _PLAYER_ALIASES.get(name, UNKNOWN)
