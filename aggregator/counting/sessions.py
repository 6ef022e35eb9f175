"""Playback sessions: what one player's CMCD v2 events say about one view.

A :class:`Session` is keyed by the opaque session handle (``Event.session``, never a raw
``sid``) and holds only the few numbers needed to turn the next event into contributions.
Contributions go to a :class:`Leaf`: the sums of one (account, stream, dimensions) in one
arrival-time minute, which the aggregator rolls up into cells when the minute closes.

What counts (decided here, from what real players send, ``fixtures/cmcd/``):

- A session's account, stream and dimensions are those of its first event.

- **View**: the session reaches a starting state: ``sta`` ``s`` (hls.js), ``r`` before any
  playing (Shaka's debug build starts that way), ``p``, or a fatal ``f``. Players that send
  no ``sta`` at all (Shaka's minified build): the first ``rr``/``bc`` (media is being
  fetched) or an ``msd``.
- **Video start / playing**: ``sta=p``; without ``sta``, the event carrying ``msd`` marks
  video start.
- **Startup time**: ``msd`` if the player sends it (before video start, or within 5 s of
  client time after it in the same minute), else the client-clock time from view start
  to the first ``p``.
- **Playing time**: client-clock time spent in ``p``, between consecutive events (``rr``
  events excluded: their ``ts`` is the request's start, not the state's), each gap capped at
  5 min, negative ones ignored, and never more in total than the arrival-time age of the
  session plus 5 min (a client cannot claim hours in a burst). Without ``sta``: from video
  start to the latest segment request plus 10 s (the player's buffer ahead), pauses and
  stalls included, as nothing tells them apart (a player sending no ``rr`` at all: up to
  its latest event).
- **Rebuffering**: entering ``r`` after video start, except right after a seek (``k`` …
  ``r`` … ``p`` is seeking); its duration is the time spent in ``r``. Not measurable
  without ``sta``.
- **Bitrate**: time-weighted by playing time at the current ``br`` (from every event but
  ``rr``: a request may be for another rendition than the one playing); a change is a
  ``br`` different from the previous one within the view.
- **Failure**: ``sta=f`` (once per view), with the error code of the first ``ec`` that comes
  with it or after it; without ``sta``, an ``e`` event. Non-fatal errors are not counted.
- **Exit before video start**: a view that ends without ever playing, failed ones included.
- **End**: ``sta`` ``e``, ``f`` or ``q``, or silence (the aggregator's idle timeout). An ended
  session keeps absorbing the events players send after the end (``t`` every interval,
  ``bc``) until the silence; ``p`` or ``s`` after ``e`` (a replay) starts a new view.
- **Resumed after a cold restart**: a session whose first event this process sees is
  mid-play (:func:`mid_play`: not ``sn=0``, and a playing, paused or seeking ``sta``; or,
  without ``sta``, a sequence number past a start-up's first events and no ``msd``) while
  the process is new (the aggregator's ``resume_until``) was counted by the run before: it
  goes on
  without a new view, startup time or exit before video start. Its viewer counts from
  here; the playing time between the old run's stop and this event is credited if it is
  playing, or if it is a change to paused or seeking (``ps`` with ``sta`` a or k: it played
  up to it); the old run credited its side up to the stop.
- **Out of order**: an event whose ``ts`` is older than one already seen moves no state and
  no duration, but its facts still count (view start, video start, failure, ``msd``,
  ``ltc``, ``ec``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from collector.handover import Dimensions, Event

__all__ = ["LEFT_PLAYING_STATES", "Leaf", "Session", "mid_play"]

MAX_GAP_MS: Final = 300_000  # a longer gap between two events is counted as this much
BUDGET_SLACK_MS: Final = 300_000.0  # credited time may exceed the session's arrival age by this
STARTUP_WAIT_MS: Final = 5_000  # how long after video start an msd may still come
STATELESS_HORIZON_MS: Final = 10_000  # playback assumed to go on after the last segment request
MAX_BITRATE_KBPS: Final = 1_000_000
MAX_LATENCY_MS: Final = 3_600_000
MAX_CODE_LENGTH: Final = 64

# Leaf.per: what one viewer added to each sum of a leaf, by index
PER_INDEX: Final[dict[str, int]] = {
    "views": 0,
    "playing": 1,
    "rebuffer": 2,  # stalls started
    "rebuffer_ms": 3,
    "failures": 4,
    "exits": 5,
    "bitrate_changes": 6,
    "concurrent": 7,
    "kbps_ms": 8,  # bitrate (kbps) x ms played at it
    "bitrate_ms": 9,  # ms played at a known bitrate
}
PER_PLAYING: Final = PER_INDEX["playing"]
PER_KBPS_MS: Final = PER_INDEX["kbps_ms"]
PER_BITRATE_MS: Final = PER_INDEX["bitrate_ms"]
PER_SIZE: Final = len(PER_INDEX)

_VIEW_STATES: Final = frozenset("spr")
_MID_PLAY_STATES: Final = frozenset("pak")  # only ever after video start
# A play state change to these, as the first event after a cold restart: a pause or a seek
# is entered from playing (the old run credited its side of the gap the same way).
LEFT_PLAYING_STATES: Final = frozenset("ak")
# Without sta: a first event with an sn this high is not the start of a playback. Real
# players' first reports arrive out of order by a few places (fixtures/cmcd: up to 5), and
# a stateless start-up (Shaka's build without sta) reaches msd by sn 7.
MID_PLAY_MIN_SN: Final = 16
_END_STATES: Final = frozenset("efq")


class Leaf:
    """Sums of one (account, stream, dimensions) in one minute. Durations in ms.

    Each sum keeps the viewers behind it (``holders``, by :data:`aggregator.counting.cells.SUMS`
    name; ``playing`` in its own set, being on the hot path): a cell shows a sum only where
    k of them contributed. Latency and bitrate are kept per viewer, so that a shown average
    weighs every viewer the same."""

    __slots__ = (
        "bitrate_changes",
        "codes",
        "concurrent",
        "exits_before_start",
        "failures",
        "latency",
        "per",
        "playing_ms",
        "rare",
        "rebuffer_count",
        "rebuffer_ms",
        "startups",
        "viewers",
        "views",
    )

    def __init__(self) -> None:
        self.viewers: list[int] = []  # one entry per session-minute; deduplicated in cells
        self.views = 0
        self.playing_ms = 0
        # viewer -> what that viewer added to each sum (the PER_* indices): who is behind a
        # sum, and how much. One small list per viewer (most leaves have one).
        self.per: dict[int, list[int]] = {}
        self.startups: list[tuple[int, int]] | None = None  # (viewer, ms)
        self.concurrent = 0  # sessions playing in this minute
        # rarely not zero: counted under `rare`
        self.rebuffer_count = 0
        self.rebuffer_ms = 0
        self.failures = 0
        self.codes: dict[str, list[int]] | None = None  # code -> viewer of each failure
        self.exits_before_start = 0
        self.bitrate_changes = 0
        self.latency: dict[int, list[int]] | None = None  # viewer -> [sum of ms, samples]
        self.rare = False  # set when a field other than the ones above is not zero

    def mine(self, viewer: int) -> list[int]:
        """The viewer's amounts in this leaf (created on first use)."""
        p = self.per.get(viewer)
        if p is None:
            p = self.per[viewer] = [0] * PER_SIZE
        return p

    def hold(self, name: str, viewer: int, amount: int = 1) -> None:
        self.mine(viewer)[PER_INDEX[name]] += amount

    def add_code(self, code: str, viewer: int) -> None:
        codes = self.codes
        if codes is None:
            codes = self.codes = {}
        code = code[:MAX_CODE_LENGTH]
        holders = codes.get(code)
        if holders is None:
            codes[code] = [viewer]
        else:
            holders.append(viewer)
        self.rare = True

    def add_latency(self, ms: int, viewer: int) -> None:
        latency = self.latency
        if latency is None:
            latency = self.latency = {}
        mine = latency.get(viewer)
        if mine is None:
            latency[viewer] = [ms, 1]
        else:
            mine[0] += ms
            mine[1] += 1
        self.rare = True

    def add_playing(self, ms: int, kbps: int, viewer: int) -> None:
        self.playing_ms += ms
        p = self.mine(viewer)
        p[PER_PLAYING] += ms
        if kbps:
            p[PER_KBPS_MS] += kbps * ms
            p[PER_BITRATE_MS] += ms

    def clear(self) -> None:
        """Drop the contents once rolled up (a session may still point at it)."""
        self.viewers.clear()
        self.per.clear()
        self.startups = None
        self.codes = None
        self.latency = None


def mid_play(ev: Event) -> bool:
    """Whether a session's first event shows a playback already going (a start-up never
    begins with it): the rule for sessions that were running before a cold restart."""
    if ev.seq == 0:
        return False  # the first event a player numbers starts something
    if ev.state is not None:
        return ev.state in _MID_PLAY_STATES
    return ev.seq is not None and ev.seq >= MID_PLAY_MIN_SN and ev.startup_ms is None


# enter(session, minute) -> the session's leaf for that minute, its viewer counted there
Enter = Callable[["Session", int], Leaf]


class Session:
    """State of one playback session (a few hundred bytes; see module docstring)."""

    __slots__ = (
        "account_id",
        "bitrate",
        "budget_ms",
        "check_at",
        "code_done",
        "conc_minute",
        "credited_ts",
        "dims",
        "ended",
        "failed",
        "handle",
        "last_arrival",
        "last_ts",
        "leaf",
        "minute",
        "msd",
        "play_ts",
        "played",
        "provisional",
        "rebuffering",
        "rr_ts",
        "seeking",
        "start_ts",
        "startup_done",
        "startup_minute",
        "state",
        "stateful",
        "stream",
        "viewed",
        "viewer",
        "viewer_day",
    )

    def __init__(self, ev: Event) -> None:
        self.handle = ev.session
        self.account_id = ev.account_id
        self.stream = ev.stream
        self.dims: Dimensions = ev.dims
        self.viewer = ev.viewer
        self.viewer_day = int(ev.arrival // 86_400)  # the UTC day whose key self.viewer is
        self.minute = -1  # minute of self.leaf
        self.leaf: Leaf | None = None
        self.check_at = 0  # minute of the next idle check (the aggregator's timing wheel)
        self.last_arrival = ev.arrival
        self.budget_ms = BUDGET_SLACK_MS
        self.last_ts = -1  # newest client ts applied to state and durations
        self.state = ""  # last sta applied ("" none yet)
        self.stateful = False  # has sent sta at least once
        self.viewed = False
        self.played = False
        self.ended = False
        self.failed = False
        self.code_done = False
        self.seeking = False
        self.rebuffering = False
        self.startup_done = False
        self.start_ts = -1  # view start (client ts)
        self.play_ts = -1  # video start (client ts)
        self.msd = -1  # an msd sent before video start
        self.provisional = -1  # startup from client times, counted, replaceable by an msd
        self.startup_minute = -1  # the minute it was counted in
        self.bitrate = 0
        self.conc_minute = -1
        self.rr_ts = -1  # latest segment request (stateless playing evidence)
        self.credited_ts = -1  # playing credited up to here (stateless)

    def resume(self, ev: Event) -> None:
        """This session was counted by the process run before (a cold restart): its view,
        startup time and video start are done; its state is the one ``ev`` shows."""
        self.viewed = self.played = self.startup_done = True
        ts = -1 if ev.ts_ms is None else ev.ts_ms
        self.start_ts = self.play_ts = self.credited_ts = ts
        if ev.state is not None:
            self.stateful = True
            self.state = ev.state  # no transition: entering it was counted before
            self.seeking = ev.state == "k"

    def playing(self) -> bool:
        """Whether the last event said the video is playing (and the view is not over)."""
        if self.ended or not self.played:
            return False
        return self.state == "p" if self.stateful else True

    def credit_gap(
        self, seconds: float, m: int, enter: Enter, *, played_until: bool = False
    ) -> None:
        """Playing time across a cold restart (arrival clock): from the last event to the
        stop on the old run's side, from the stop to the first event on the new run's side.
        Only while playing (``played_until``: the first event is a change of state that a
        playback leaves playing for, so it played up to it); capped like any gap."""
        if seconds <= 0 or not (played_until or self.playing()):
            return
        ms = int(seconds * 1000)
        self.budget_ms += ms
        self._credit(self._leaf(m, enter), ms, True, m)

    # -- the per-event step ------------------------------------------------------------------

    def observe(self, ev: Event, m: int, enter: Enter) -> None:
        """Apply one event that arrived in minute ``m``."""
        gap = ev.arrival - self.last_arrival
        if gap > 0:
            self.budget_ms += gap * 1000.0
            self.last_arrival = ev.arrival
        if ev.viewer != self.viewer and ev.arrival >= (self.viewer_day + 1) * 86_400:
            # past UTC midnight the person's key is the new day's: a playback crossing
            # midnight counts under it from then on, as the person's next playback does
            # (one person, one viewer per day; the old key is destroyed with its day)
            self.viewer_day = int(ev.arrival // 86_400)
            self.viewer = ev.viewer
        if self.ended:
            self._after_end(ev, m, enter)
            return
        if ev.state is not None:
            self.stateful = True
        if not self.stateful:
            self._stateless(ev, m, enter)
            return
        ts = ev.ts_ms
        sta = ev.state
        leaf = None
        if self.viewed:
            leaf = self.leaf
            if self.minute != m or leaf is None:
                leaf = enter(self, m)
        if ev.kind != "rr" and (ts is None or ts >= self.last_ts):
            if ts is not None:
                last = self.last_ts
                self.last_ts = ts
                if leaf is not None and ts > last >= 0:
                    st = self.state
                    if st == "p":  # the common case, inlined: _credit(leaf, dt, True, m)
                        dt = ts - last
                        if dt > MAX_GAP_MS:
                            dt = MAX_GAP_MS
                        budget = self.budget_ms
                        if dt > budget:
                            dt = max(int(budget), 0)
                        self.budget_ms = budget - dt
                        if dt:  # leaf.add_playing, inlined
                            leaf.playing_ms += dt
                            per = leaf.per.get(self.viewer)
                            if per is None:
                                per = leaf.per[self.viewer] = [0] * PER_SIZE
                            per[PER_PLAYING] += dt
                            kbps = self.bitrate
                            if kbps:
                                per[PER_KBPS_MS] += kbps * dt
                                per[PER_BITRATE_MS] += dt
                        if self.conc_minute != m:
                            self.conc_minute = m
                            leaf.concurrent += 1
                            leaf.hold("concurrent", self.viewer)
                    elif st == "r" and self.rebuffering:
                        self._credit(leaf, ts - last, False, m)
            br = ev.bitrate_kbps
            if br is not None and 0 < br <= MAX_BITRATE_KBPS and br != self.bitrate:
                if self.bitrate and leaf is not None:
                    leaf.bitrate_changes += 1
                    leaf.hold("bitrate_changes", self.viewer)
                    leaf.rare = True
                self.bitrate = br
            if sta is not None and sta != self.state:
                leaf = self._transition(sta, ts, ev, m, enter, leaf)
            elif sta == "p" and leaf is not None and self.conc_minute != m:
                self.conc_minute = m
                leaf.concurrent += 1
                leaf.hold("concurrent", self.viewer)
        elif sta is not None:
            leaf = self._late_facts(sta, ts, ev, m, enter, leaf)
        if leaf is not None:
            if not self.startup_done or ev.latency_ms is not None or ev.error_code is not None:
                self._facts(ev, ts, leaf)
        elif ev.startup_ms is not None and ev.startup_ms >= 0:
            self.msd = ev.startup_ms  # before the view starts: kept for its video start

    def _credit(self, leaf: Leaf, dt: int, playing: bool, m: int) -> None:
        if dt > MAX_GAP_MS:
            dt = MAX_GAP_MS
        if dt > self.budget_ms:
            dt = max(int(self.budget_ms), 0)
        self.budget_ms -= dt
        if playing:
            if dt:
                leaf.add_playing(dt, self.bitrate, self.viewer)
            if self.conc_minute != m:
                self.conc_minute = m
                leaf.concurrent += 1
                leaf.hold("concurrent", self.viewer)
        elif dt:
            leaf.rebuffer_ms += dt
            leaf.hold("rebuffer_ms", self.viewer, dt)
            leaf.rare = True

    def _leaf(self, m: int, enter: Enter) -> Leaf:
        leaf = self.leaf
        if self.minute != m or leaf is None:
            leaf = enter(self, m)
        return leaf

    def _start_view(self, ts: int | None, m: int, enter: Enter) -> Leaf:
        self.viewed = True
        self.start_ts = -1 if ts is None else ts
        leaf = self._leaf(m, enter)
        leaf.views += 1
        leaf.hold("views", self.viewer)
        return leaf

    def _transition(
        self, sta: str, ts: int | None, ev: Event, m: int, enter: Enter, leaf: Leaf | None
    ) -> Leaf | None:
        old = self.state
        self.state = sta
        if leaf is None:
            if sta not in _VIEW_STATES and sta != "f":
                return None  # d, w, a, k before any view: nothing to count yet
            leaf = self._start_view(ts, m, enter)
        if sta == "p":
            self.seeking = False
            self.rebuffering = False
            if not self.played:
                self._video_start(ts, leaf)
            if self.conc_minute != m:
                self.conc_minute = m
                leaf.concurrent += 1
                leaf.hold("concurrent", self.viewer)
        elif sta == "r":
            if self.played and not self.seeking and old != "k" and not self.rebuffering:
                self.rebuffering = True
                leaf.rebuffer_count += 1
                leaf.hold("rebuffer", self.viewer)
                leaf.rare = True
        else:
            self.rebuffering = False
            if sta == "k":
                self.seeking = True
            elif sta in _END_STATES:
                if sta == "f":
                    self._fail(leaf, ev.error_code)
                self._end(leaf)
        return leaf

    def _late_facts(
        self, sta: str, ts: int | None, ev: Event, m: int, enter: Enter, leaf: Leaf | None
    ) -> Leaf | None:
        """An out-of-order event (or an ``rr``): facts, no state or duration."""
        if ev.kind == "rr":
            return leaf
        if leaf is None:
            if sta not in _VIEW_STATES and sta != "f":
                return None
            leaf = self._start_view(ts, m, enter)
        if sta == "p" and not self.played:
            self._video_start(ts, leaf)
        elif sta == "f":
            self._fail(leaf, ev.error_code)
        return leaf

    def _video_start(self, ts: int | None, leaf: Leaf) -> None:
        self.played = True
        self.play_ts = -1 if ts is None else ts
        if self.msd >= 0:
            self._startup(leaf, self.msd)
        elif 0 <= self.start_ts <= self.play_ts:
            # counted now; an msd in the next STARTUP_WAIT_MS (same minute) replaces it
            self.provisional = self.play_ts - self.start_ts
            self.startup_minute = self.minute
            self._startup(leaf, self.provisional)
            self.startup_done = False

    def _startup(self, leaf: Leaf, ms: int) -> None:
        self.startup_done = True
        if leaf.startups is None:
            leaf.startups = [(self.viewer, ms)]
        else:
            leaf.startups.append((self.viewer, ms))

    def _msd_after_video_start(self, leaf: Leaf, msd: int) -> None:
        if self.provisional < 0:
            self._startup(leaf, msd)
            return
        startups = leaf.startups
        mine = (self.viewer, self.provisional)
        if self.minute == self.startup_minute and startups and mine in startups:
            startups.remove(mine)
            self._startup(leaf, msd)
        else:
            self.startup_done = True  # the computed one is in a closed minute: it stays

    def _facts(self, ev: Event, ts: int | None, leaf: Leaf) -> None:
        """What any event of a view carries: startup delay, latency, error code."""
        if not self.startup_done:
            msd = ev.startup_ms
            if msd is not None and msd >= 0:
                if self.played:
                    self._msd_after_video_start(leaf, msd)
                else:
                    self.msd = msd
            elif self.played and ts is not None and ts - self.play_ts >= STARTUP_WAIT_MS:
                self.startup_done = True
        ltc = ev.latency_ms
        if ltc is not None and 0 <= ltc <= MAX_LATENCY_MS:
            leaf.add_latency(ltc, self.viewer)
        if ev.error_code is not None and self.failed and not self.code_done:
            self.code_done = True
            leaf.add_code(ev.error_code, self.viewer)

    def _fail(self, leaf: Leaf, code: str | None) -> None:
        if self.failed:
            return
        self.failed = True
        leaf.failures += 1
        leaf.hold("failures", self.viewer)
        leaf.rare = True
        if code is not None:
            self.code_done = True
            leaf.add_code(code, self.viewer)

    def _end(self, leaf: Leaf) -> None:
        if not self.played:
            leaf.exits_before_start += 1
            leaf.hold("exits", self.viewer)
            leaf.rare = True
        self.startup_done = True
        self.ended = True

    def end(self, m: int, enter: Enter) -> None:
        """End by silence or shutdown (the aggregator calls this). Only a view that never
        played has something left to count (an exit before video start, in minute ``m``)."""
        if self.ended:
            return
        if self.viewed and not self.played:
            self._end(self._leaf(m, enter))
        self.ended = True

    def _after_end(self, ev: Event, m: int, enter: Enter) -> None:
        """Events after the end: a replay after ``e`` starts a new view; a failure's error
        code that comes after the ``f`` is kept; everything else is ignored."""
        sta = ev.state
        ts = ev.ts_ms
        if (
            sta in ("s", "p")
            and self.state == "e"
            and ev.kind != "rr"
            and ts is not None
            and ts > self.last_ts
        ):
            self.ended = self.viewed = self.played = self.failed = self.code_done = False
            self.seeking = self.rebuffering = self.startup_done = False
            self.msd = self.play_ts = self.provisional = -1
            self.last_ts = ts
            leaf = self._transition(sta, ts, ev, m, enter, None)
            if leaf is not None:
                self._facts(ev, ts, leaf)
            return
        if ev.error_code is not None and self.failed and not self.code_done:
            self.code_done = True
            (self._leaf(m, enter)).add_code(ev.error_code, self.viewer)

    # -- players that send no sta --------------------------------------------------------------

    def _stateless(self, ev: Event, m: int, enter: Enter) -> None:
        kind = ev.kind
        ts = ev.ts_ms
        msd = ev.startup_ms
        if not self.viewed:
            if kind not in ("rr", "bc", "e") and msd is None:
                if ts is not None and ts > self.last_ts:
                    self.last_ts = ts
                return
            leaf = self._start_view(ts, m, enter)
        else:
            leaf = self._leaf(m, enter)
        if ts is not None:
            if ts > self.last_ts:
                self.last_ts = ts
            if kind == "rr" and ts > self.rr_ts:
                self.rr_ts = ts
        if kind != "rr":
            br = ev.bitrate_kbps
            if br is not None and 0 < br <= MAX_BITRATE_KBPS and br != self.bitrate:
                if self.bitrate:
                    leaf.bitrate_changes += 1
                    leaf.hold("bitrate_changes", self.viewer)
                    leaf.rare = True
                self.bitrate = br
        if not self.played and msd is not None and msd >= 0:
            self.played = True
            self.play_ts = self.credited_ts = self.last_ts if ts is None else ts
            self._startup(leaf, msd)
        if self.played:
            end = self.last_ts
            if self.rr_ts >= 0 and self.rr_ts + STATELESS_HORIZON_MS < end:
                end = self.rr_ts + STATELESS_HORIZON_MS
            if end > self.credited_ts:
                self._credit(leaf, end - self.credited_ts, True, m)
                self.credited_ts = end
        if kind == "e":
            self._fail(leaf, ev.error_code)
        elif ev.error_code is not None and self.failed and not self.code_done:
            self.code_done = True
            leaf.add_code(ev.error_code, self.viewer)
        ltc = ev.latency_ms
        if ltc is not None and 0 <= ltc <= MAX_LATENCY_MS:
            leaf.add_latency(ltc, self.viewer)
