"""The seam between collector and aggregator: identifier-free events and the Sink they go to.

Everything that crosses this seam is free of raw identifiers: no IP address, user agent,
``sid``, URL or header. A viewer is an opaque 64-bit keyed hash under a daily in-memory
secret (``collector/viewer.py``); a playback session is an opaque 64-bit keyed hash of
(account, ``sid``) under a per-process in-memory secret. Dimensions are coarse classes
from small sets. In single-node mode the Sink is the aggregator in the same process; in
a cluster it is the link client (``collector/link.py``) that ships events to the aggregator
shard that owns the account (design.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

UNKNOWN = "(unknown)"


@dataclass(frozen=True, slots=True)
class Dimensions:
    """Coarse, low-cardinality classes derived from a request before its identifiers go."""

    country: str = UNKNOWN  # ISO 3166-1 alpha-2, or (unknown)
    device: str = UNKNOWN  # desktop | mobile | tablet | tv | console | other
    os: str = UNKNOWN  # OS family: Windows, macOS, Linux, Android, iOS, ChromeOS, ...
    browser: str = UNKNOWN  # browser family: Chrome, Firefox, Safari, Edge, ...
    player: str = UNKNOWN  # hls.js | shaka | dash.js | video.js | html5 | (unknown)


@dataclass(slots=True)
class Event:
    """One CMCD v2 event, admitted and stripped. Durations come from the client clock;
    windows from ``arrival`` (server clock, unix seconds). Not frozen: a frozen dataclass
    costs twice as much to build, and one is built per event on the hot path."""

    account_id: str
    session: int  # opaque session handle (never the raw sid)
    viewer: int  # opaque viewer key (never IP or user agent)
    arrival: float
    stream: str  # CMCD cid, or (unknown)
    kind: str  # CMCD e: t, ps, rr, bc, pr, e, ce, m, um, ...
    dims: Dimensions
    ts_ms: int | None = None  # client clock (ts)
    seq: int | None = None  # sn
    state: str | None = None  # sta: s starting, p playing, a paused, k seeking, r rebuffering,
    #                            e ended, f fatal, d preloading, w waiting, q quit
    bitrate_kbps: int | None = None  # br (first entry)
    buffer_ms: int | None = None  # bl (first entry)
    startup_ms: int | None = None  # msd
    latency_ms: int | None = None  # ltc
    playhead_ms: int | None = None  # pt
    rate: float | None = None  # pr
    error_code: str | None = None  # ec (first entry)
    response_code: int | None = None  # rc (rr events)
    ttfb_ms: int | None = None  # ttfb (rr events)
    cdn_host: str | None = None  # host of rr url, only if the account opted in; else None


class Sink(Protocol):
    """Where the collector hands admitted, stripped events. Implemented by the aggregator."""

    def submit(self, events: Sequence[Event]) -> None:
        """Take events; must not block on I/O (the report handler awaits nothing for it)."""

    def forget_account(self, account_id: str) -> None:
        """Drop every in-memory trace of an account (it is being deleted)."""

    def accepting(self) -> bool:
        """False when events cannot be kept safely now (spool full): reports get 503."""

    async def delivered(self) -> bool:
        """Whether the events of the report just handed over are safe (a cluster collector
        waits for its owner's acknowledgement; one process: at once). False: 503."""

    def accepting_for(self, account_id: str) -> bool:
        """False when this account's events cannot be taken now (in a cluster: its owner
        shard is away or its link's buffer is full): its reports get 503."""
