"""Count each event once: players re-send identical events (same sid, sn, ts) on 429/5xx.

Per session (an opaque int handle) the state is packed into ONE Python int, so an active
session costs about 48 bytes of state plus its dict slot and key (about 130 bytes in all,
measured in ``tests/collector/test_dedupe.py``):

    bits   0..42   max_ts   largest client ``ts`` (ms) seen in this epoch
    bits  43..85   floor    ``max_ts`` of the previous epoch (0 before any restart)
    bits  86..117  base     every sn below ``base`` is done (seen, or given up as too old)
    bits 118..     window   bit i set = sn ``base + i`` seen; bit 0 is always clear

Rules for an event with a sequence number (the IPsec anti-replay window, in sn space):

1. ``ts <= floor``: a retry from an epoch already left behind -> duplicate.
2. sn not seen yet (``sn >= base`` and its bit clear) -> new; it is recorded and ``max_ts``
   raised. An sn more than ``WINDOW`` (1024) above ``base`` slides the window up; sns that
   fall below it unseen are given up on (rule 3 then treats them as duplicates).
3. sn seen (or below the window) and ``ts <= max_ts`` -> duplicate: a re-send is identical,
   so its ts is one we have already seen.
4. sn seen and ``ts > max_ts`` -> the player restarted its numbering (Shaka does after a
   re-configure, same sid, newer ts): a new epoch starts with this event, ``floor`` becomes
   the old ``max_ts`` (so late re-sends of the old epoch stay duplicates, rule 1) and the
   event is new.

Known limit: if the first events of a new epoch to arrive carry sns the old epoch never
reached, they count in the old epoch and raise ``max_ts``; a later low sn of the new epoch
with a smaller ts then looks like a re-send. Tracking a ts per sn would fix it at ten times
the memory.

Events without sn are keyed by (kind, ts): a sorted ``bytes`` ring of the 16 newest (by ts)
such events, 8 bytes each, after an 8-byte ``floor``; an event at or below the floor (older
than everything remembered) is taken for a re-send. A session with both kinds of events keeps a
tuple of both states. ``ts`` is clamped to [0, 2**43) ms (until the year 2248); an sn outside
[0, 2**32) is treated like a missing one.

Idle sessions: sessions live in three generations (dicts) rotated every ``idle_seconds / 2``;
a session seen again moves to the newest. A session silent for ``idle_seconds`` is forgotten
within ``1.5 * idle_seconds`` by dropping a whole generation (a C-level free, no sweep walks
sessions in Python). At ``max_sessions`` a new session evicts one from the oldest generation
and ``streamtally_dedupe_evictions_total`` counts it.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterable

from prometheus_client import Counter

from collector.handover import Event

EVICTIONS = Counter(
    "streamtally_dedupe_evictions_total",
    "Sessions forgotten early because the deduper held its maximum number of sessions",
)

WINDOW = 1024  # sequence numbers remembered below the highest one
NO_SN_RING = 16  # (kind, ts) pairs remembered per session for events without sn
GENERATIONS = 3

_TS_BITS = 43
_TS_MAX = (1 << _TS_BITS) - 1
_FLOOR_SHIFT = _TS_BITS
_BASE_SHIFT = 2 * _TS_BITS
_BASE_BITS = 32
_SN_LIMIT = 1 << _BASE_BITS
_WINDOW_SHIFT = _BASE_SHIFT + _BASE_BITS
_BASE_MASK = _SN_LIMIT - 1
_BASE_ONE = 1 << _BASE_SHIFT

# Event kinds of CMCD v2 get fixed codes so two kinds at the same ts never collide.
_KIND_CODES = {
    kind: code
    for code, kind in enumerate(("t", "ps", "rr", "bc", "pr", "e", "ce", "m", "um", "b", "f"), 1)
}
_ENTRY = 8  # bytes per (ts << 16 | kind code) entry, big-endian so bytes compare as numbers
_ALL_KINDS = 0xFFFF
_RING_BYTES = _ENTRY * (NO_SN_RING + 1)
_RING_EMPTY = bytes(_ENTRY)  # a no-sn state: floor 0 (none), nothing remembered

_State = int | bytes | tuple[int, bytes]


def _kind_code(kind: str) -> int:
    code = _KIND_CODES.get(kind)
    if code is None:
        code = 0x100 | (hash(kind) & 0xFEFF)  # per-process hash; state is memory only
    return code


def _with_sn(state: int, sn: int, ts: int) -> tuple[bool, int]:
    """Apply rules 1-4 to a packed sn state: (is new, new state)."""
    max_ts = state & _TS_MAX
    floor = (state >> _FLOOR_SHIFT) & _TS_MAX
    if floor and ts <= floor:
        return False, state
    high = state >> _BASE_SHIFT
    if high == sn:  # the usual case: the next sn in order, no gap open
        state += _BASE_ONE
        if ts > max_ts:
            state += ts - max_ts
        return True, state
    base = high & _BASE_MASK
    window = high >> _BASE_BITS
    offset = sn - base
    if offset < 0 or (window >> offset) & 1:
        if ts <= max_ts:
            return False, state
        # A numbering restart: new epoch, this event is its first.
        floor, max_ts, base, window, offset = max_ts, ts, 0, 0, sn
    elif ts > max_ts:
        max_ts = ts
    if offset >= WINDOW:
        slide = offset - WINDOW + 1
        window >>= slide
        base += slide
        offset = WINDOW - 1
    window |= 1 << offset
    # Move base past the run of seen sns at the bottom (count trailing ones).
    run = (~window & (window + 1)).bit_length() - 1
    window >>= run
    base += run
    return True, max_ts | floor << _FLOOR_SHIFT | base << _BASE_SHIFT | window << _WINDOW_SHIFT


def _without_sn(ring: bytes, kind: str, ts: int) -> tuple[bool, bytes]:
    """Dedupe by (kind, ts) in a sorted ring of the newest entries: (is new, new ring)."""
    entry = (ts << 16 | _kind_code(kind)).to_bytes(_ENTRY, "big")
    if entry > ring[-_ENTRY:]:  # the usual case: newer than everything remembered
        ring += entry
    else:
        if entry <= ring[:_ENTRY]:  # at or below the floor
            return False, ring
        at = ring.find(entry, _ENTRY)
        while at != -1:
            if at % _ENTRY == 0:
                return False, ring
            at = ring.find(entry, at + 1)
        at = len(ring) - _ENTRY  # keep the ring sorted: insert before the larger entries
        while ring[at - _ENTRY : at] > entry:
            at -= _ENTRY
        ring = ring[:at] + entry + ring[at:]
    if len(ring) > _RING_BYTES:
        # Forget the oldest entry; the floor rises to its ts (every kind).
        floor = int.from_bytes(ring[_ENTRY : 2 * _ENTRY], "big") | _ALL_KINDS
        ring = floor.to_bytes(_ENTRY, "big") + ring[2 * _ENTRY :]
    return True, ring


class Deduper:
    """Answers whether an event of a session is seen for the first time."""

    __slots__ = (
        "_clock",
        "_max_sessions",
        "_middle",
        "_newest",
        "_next_rotation",
        "_oldest",
        "_period",
    )

    def __init__(
        self,
        idle_seconds: float = 1800,
        max_sessions: int = 2_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self._period = idle_seconds / (GENERATIONS - 1)
        self._max_sessions = max_sessions
        self._clock = clock
        # Sessions seen in the current period, the one before, and the one before that.
        self._newest: dict[int, _State] = {}
        self._middle: dict[int, _State] = {}
        self._oldest: dict[int, _State] = {}
        self._next_rotation = clock() + self._period

    def first_time(self, session: int, sn: int | None, ts: int, kind: str) -> bool:
        """True if this event is new (count it), False if it is a duplicate."""
        now = self._clock()
        if now >= self._next_rotation:
            self._rotate(now)
        state = self._newest.get(session)
        if state is None:
            state = self._take(session)
        return self._apply(session, state, sn, ts, kind)

    def fresh(self, events: Iterable[Event]) -> list[Event]:
        """The events seen for the first time, in order: :meth:`first_time` for a batch
        (the cluster link's), with the clock read once and the usual case (an event with
        an sn, a session without no-sn state) decided without a further call."""
        now = self._clock()
        if now >= self._next_rotation:
            self._rotate(now)
        newest = self._newest
        take = self._take
        apply = self._apply
        with_sn = _with_sn
        out: list[Event] = []
        append = out.append
        for ev in events:
            session = ev.session
            state = newest.get(session)
            if state is None:
                state = take(session)
            sn = ev.seq
            ts = ev.ts_ms or 0
            if (
                sn is not None
                and 0 <= sn < _SN_LIMIT
                and 0 <= ts <= _TS_MAX
                and (state is None or type(state) is int)
            ):
                state = state or 0
                if state >> _BASE_SHIFT == sn and ts > (state >> _FLOOR_SHIFT) & _TS_MAX:
                    # _with_sn's usual case inline: the next sn in order, no gap open
                    state += _BASE_ONE
                    max_ts = state & _TS_MAX
                    if ts > max_ts:
                        state += ts - max_ts
                    newest[session] = state
                    append(ev)
                    continue
                new, newest[session] = with_sn(state, sn, ts)
            else:
                new = apply(session, state, sn, ts, ev.kind)
            if new:
                append(ev)
        return out

    def _apply(
        self, session: int, state: _State | None, sn: int | None, ts: int, kind: str
    ) -> bool:
        newest = self._newest
        if ts > _TS_MAX:
            ts = _TS_MAX
        elif ts < 0:
            ts = 0
        if sn is not None and 0 <= sn < _SN_LIMIT:
            if state is None or type(state) is int:
                new, newest[session] = _with_sn(state or 0, sn, ts)
            elif type(state) is bytes:
                new, packed = _with_sn(0, sn, ts)
                newest[session] = (packed, state)
            else:
                assert isinstance(state, tuple)
                new, packed = _with_sn(state[0], sn, ts)
                newest[session] = (packed, state[1])
            return new
        if state is None or type(state) is bytes:
            new, newest[session] = _without_sn(state or _RING_EMPTY, kind, ts)
        elif type(state) is int:
            new, ring = _without_sn(_RING_EMPTY, kind, ts)
            newest[session] = (state, ring)
        else:
            assert isinstance(state, tuple)
            new, ring = _without_sn(state[1], kind, ts)
            newest[session] = (state[0], ring)
        return new

    def forget(self, session: int) -> None:
        """Drop a session's state (it ended, or its account was deleted)."""
        self._newest.pop(session, None)
        self._middle.pop(session, None)
        self._oldest.pop(session, None)

    def __len__(self) -> int:
        return len(self._newest) + len(self._middle) + len(self._oldest)

    def memory_per_session(self) -> float:
        """Bytes per tracked session: sampled key and state sizes plus the dicts' own share."""
        count = len(self)
        if count == 0:
            return 0.0
        generations = (self._newest, self._middle, self._oldest)
        items = itertools.chain.from_iterable(g.items() for g in generations)
        sample = list(itertools.islice(items, 256))
        per_entry = sum(sys.getsizeof(k) + _state_size(v) for k, v in sample) / len(sample)
        tables = sum(sys.getsizeof(g) for g in generations)
        return per_entry + tables / count

    def _take(self, session: int) -> _State | None:
        """A session's state from an older generation (removed there), or None if unknown."""
        state = self._middle.pop(session, None)
        if state is None:
            state = self._oldest.pop(session, None)
            if state is None and len(self) >= self._max_sessions:
                self._evict_one()
        return state

    def _rotate(self, now: float) -> None:
        periods = (now - self._next_rotation) // self._period + 1
        if periods >= GENERATIONS:
            self._oldest, self._middle = {}, {}
        elif periods == 2:
            self._oldest, self._middle = self._newest, {}
        else:
            self._oldest, self._middle = self._middle, self._newest
        self._newest = {}
        self._next_rotation = now + self._period

    def _evict_one(self) -> None:
        for generation in (self._oldest, self._middle, self._newest):
            if generation:
                generation.popitem()
                EVICTIONS.inc()
                return

    def __repr__(self) -> str:
        return f"Deduper(sessions={len(self)})"


def _state_size(state: _State) -> int:
    if isinstance(state, tuple):
        return sys.getsizeof(state) + sys.getsizeof(state[0]) + sys.getsizeof(state[1])
    return sys.getsizeof(state)
