"""Counting in time: sessions' contributions per minute, handed over as raw minute cells.

Hot path (:meth:`Aggregator.submit`): one dict lookup for the session, and the session adds
its event's contributions to one :class:`~aggregator.counting.sessions.Leaf` — the sums of its
(account, stream, dimensions) in the event's arrival minute. Nothing else happens per event.

When a minute is over (:meth:`Aggregator.tick`, a couple of seconds after its end) its
leaves become that minute's raw cells, one per (stream, breakdown, value) with the union of
the viewer keys and, for each value inside (error code, startup bucket, latency, bitrate),
the viewers holding it. :meth:`Aggregator.take_closed` hands the closed minutes to the
release (:mod:`aggregator.release.ledger`), which alone decides what is published, in minutes,
hours and days. Minutes are the base window: hours and days are built from what minutes
publish and what they hold back, never from raw roll-ups.

Windows use the server's arrival time: an event arriving in a minute already closed (a
race with the tick, a clock step back) counts in the oldest open minute. Client ``ts`` only
measures durations inside a session.

Memory: sessions are ended by their player (``sta`` e/f/q) or by silence (``idle_seconds``,
found with a timing wheel keyed by minute, so a tick never scans all sessions). Closed
minutes stay only until they are taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from prometheus_client import Counter

from aggregator.counting.cells import Group
from aggregator.counting.close import close_minute
from aggregator.counting.sessions import (
    LEFT_PLAYING_STATES,
    Leaf,
    Session,
    mid_play,
)
from collector.handover import Dimensions, Event

__all__ = ["CLOSE_GRACE_SECONDS", "DEFAULT_BREAKDOWNS", "Aggregator", "Group"]


DEFAULT_BREAKDOWNS: Final = ("", "country", "device", "os", "browser", "player")
DIMENSIONS: Final = frozenset(DEFAULT_BREAKDOWNS[1:])
CLOSE_GRACE_SECONDS: Final = 2.0  # a minute closes this long after its end
# At a stop, a session that played and reported this recently is credited up to the stop
# (the next run credits from the stop to its first event): a heartbeat interval or two.
STOP_CREDIT_SECONDS: Final = 120.0
SLICE_LEAVES: Final = 100  # leaves closed between two yields of tick_steps (~2-3 ms)

SESSIONS_REFUSED = Counter(
    "streamtally_sessions_refused_total",
    "Events of new playback sessions not counted because max_sessions were held",
)

LeafKey = tuple[str, str, Dimensions]  # (account_id, stream, dimensions)


class Aggregator:
    """Sessions and windowed cells of all accounts; implements collector.handover.Sink."""

    def __init__(
        self,
        breakdowns: Iterable[str] = DEFAULT_BREAKDOWNS,
        idle_seconds: float = 1800,
        max_sessions: int = 2_000_000,
    ) -> None:
        unknown = [b for b in breakdowns if b and b not in DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown breakdown(s): {', '.join(unknown)}")
        if idle_seconds <= 0 or max_sessions <= 0:
            raise ValueError("idle_seconds and max_sessions must be positive")
        # the stream total ("") is always kept: k-anonymity checks every breakdown against it
        self.breakdowns: tuple[str, ...] = tuple(dict.fromkeys(("", *breakdowns)))
        self.idle_seconds = float(idle_seconds)
        self.max_sessions = max_sessions
        self._sessions: dict[int, Session] = {}
        self._wheel: dict[int, list[Session]] = {}  # minute -> sessions to check for silence
        self._leaves: dict[int, dict[LeafKey, Leaf]] = {}  # open minute -> leaves
        self._open_minute = 0  # minutes before this one are closed
        self._closed: list[Group] = []  # closed minutes not taken yet
        self._refused = 0
        # Until then (unix seconds), a new session whose first event is mid-play was counted
        # by the run before a cold restart: it is resumed, not started (sessions.mid_play).
        self.resume_until = float("-inf")
        self.resumed_from = float("inf")  # when the run before stopped (or this one started)

    # -- Sink ----------------------------------------------------------------------------------

    def submit(self, events: Sequence[Event]) -> None:
        """Count events (the report handler's call: no I/O, a few µs per event)."""
        sessions = self._sessions
        enter = self._enter
        open_minute = self._open_minute
        for ev in events:
            m = int(ev.arrival // 60)
            if m < open_minute:
                m = open_minute
            s = sessions.get(ev.session)
            if s is None:
                if len(sessions) >= self.max_sessions:
                    self._refused += 1
                    SESSIONS_REFUSED.inc()
                    continue
                s = sessions[ev.session] = Session(ev)
                self._schedule(s)
                if ev.arrival < self.resume_until and mid_play(ev):
                    s.resume(ev)
                    s.observe(ev, m, enter)
                    if ev.kind != "ps":  # a heartbeat: it was in this state before
                        s.credit_gap(ev.arrival - self.resumed_from, m, enter)
                    elif ev.state in LEFT_PLAYING_STATES:  # paused or seeking: it played
                        s.credit_gap(ev.arrival - self.resumed_from, m, enter, played_until=True)
                    continue
            elif s.account_id != ev.account_id:
                continue  # a handle of another account (cannot happen with keyed handles)
            elif m < s.minute:
                m = s.minute
            s.observe(ev, m, enter)

    def accepting(self) -> bool:
        """False while max_sessions are held (new sessions' events would be refused)."""
        return len(self._sessions) < self.max_sessions

    def forget_account(self, account_id: str) -> None:
        """Drop every session, open minute and cell group of the account."""
        for handle in [h for h, s in self._sessions.items() if s.account_id == account_id]:
            s = self._sessions.pop(handle)
            s.check_at = -1
            s.leaf = None
        for minute, sessions in list(self._wheel.items()):
            self._wheel[minute] = [s for s in sessions if s.account_id != account_id]
        for leaves in self._leaves.values():
            for key in [k for k in leaves if k[0] == account_id]:
                del leaves[key]
        self._closed = [g for g in self._closed if g.account_id != account_id]

    @property
    def open_minute(self) -> int:
        """Minutes before this one (unix minutes) are closed: no event counts in them."""
        return self._open_minute

    # -- time ----------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """End silent sessions, close the minutes that are over and roll them up."""
        for _ in self.tick_steps(now):
            pass

    def tick_steps(self, now: float, slice_leaves: int = SLICE_LEAVES) -> Iterator[None]:
        """:meth:`tick` in slices: yields after every ``slice_leaves`` leaves, so that a
        caller on an event loop lets requests through while a big minute closes. The open
        minute moves on first: events arriving between slices count in it."""
        self._expire(now)
        limit = int((now - CLOSE_GRACE_SECONDS) // 60)  # minutes before this one are over
        if limit <= self._open_minute:
            return
        due = sorted(k for k in self._leaves if k < limit)
        self._open_minute = limit
        for m in due:
            yield from self._close_minute_steps(m, slice_leaves)

    def close_now(self, now: float) -> None:
        """Close the current minute early too (admin flush): its cells become final now;
        events still arriving in it are counted in the next minute."""
        self.tick(now)
        current = int(now // 60)
        if current < self._open_minute:
            if self._open_minute not in self._leaves:
                return
            current = self._open_minute  # events that came after an earlier admin flush
        for m in sorted(k for k in self._leaves if k <= current):
            self._close_minute(m)
        self._open_minute = current + 1

    def end_all(self, now: float) -> None:
        """Shutdown: end every session (one playing is credited up to ``now``: a cold
        restart's next run credits from there) and close every open minute."""
        m = max(self._open_minute, int(now // 60))
        for s in self._sessions.values():
            silence = now - s.last_arrival
            if silence <= STOP_CREDIT_SECONDS:  # still playing when the process stops
                s.credit_gap(silence, m, self._enter)
            s.end(m, self._enter)
            s.check_at = -1
        self._sessions.clear()
        self._wheel.clear()
        for minute in sorted(self._leaves):
            self._close_minute(minute)
        self._open_minute = max(self._open_minute, m + 1)

    def take_closed(self) -> list[Group]:
        """The closed minutes' raw cell groups not taken yet, oldest first (after a tick)."""
        out, self._closed = self._closed, []
        return out

    def stats(self) -> dict[str, int]:
        leaves = sum(len(b) for b in self._leaves.values())
        return {
            "active_sessions": len(self._sessions),  # ended ones wait for silence too
            "leaves": leaves,
            "refused_events": self._refused,
        }

    # -- internals -----------------------------------------------------------------------------

    def _enter(self, s: Session, m: int) -> Leaf:
        """The session's leaf in minute ``m``; its viewer is counted there."""
        leaves = self._leaves.get(m)
        if leaves is None:
            leaves = self._leaves[m] = {}
        key = (s.account_id, s.stream, s.dims)
        leaf = leaves.get(key)
        if leaf is None:
            leaf = leaves[key] = Leaf()
        leaf.viewers.append(s.viewer)
        s.leaf = leaf
        s.minute = m
        return leaf

    def _schedule(self, s: Session) -> None:
        s.check_at = int((s.last_arrival + self.idle_seconds) // 60)
        self._wheel.setdefault(s.check_at, []).append(s)

    def _expire(self, now: float) -> None:
        now_minute = int(now // 60)
        due = sorted(k for k in self._wheel if k <= now_minute)
        if not due:
            return
        m = max(self._open_minute, now_minute)
        sessions = self._sessions
        for k in due:
            for s in self._wheel.pop(k):
                if s.check_at != k:
                    continue
                expires = s.last_arrival + self.idle_seconds
                if expires <= now:
                    s.end(m, self._enter)
                    s.check_at = -1
                    if sessions.get(s.handle) is s:
                        del sessions[s.handle]
                else:
                    s.check_at = int(expires // 60)
                    self._wheel.setdefault(s.check_at, []).append(s)

    def _close_minute(self, m: int) -> None:
        for _ in self._close_minute_steps(m, len(self._leaves.get(m, ())) + 1):
            pass

    def _close_minute_steps(self, m: int, slice_leaves: int) -> Iterator[None]:
        leaves = self._leaves.pop(m, {})
        groups = yield from close_minute(leaves, m, self.breakdowns, slice_leaves)
        self._closed.extend(groups)
