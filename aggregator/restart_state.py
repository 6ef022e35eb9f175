"""The in-memory state of ``streamtally serve`` as plain data, for a hot restart.

:func:`to_state` turns what a running process holds — playback sessions and their open
minute leaves, closed minutes not yet released, the release ledger (open hour and day rows
with their viewer sets and rounding steps, pools of held-back cells, the dp budget each
viewer key has spent that day), what the writer last published, the
deduper's and the replay guard's memories, the rate limiters' buckets (keyed by opaque
handles under the process secret, never an address or a session id) — into a dict of
ints, floats, strings, bytes, tuples, lists, sets and dicts only; :func:`from_state` puts
it back into freshly built objects. :mod:`aggregator.hot_restart` encodes that dict with
:mod:`marshal` (plain data, no code or arbitrary objects: never pickle) into anonymous
memory, with the viewer secrets beside it, never in it.

The state names the fields of each class it carries (``shapes``); a new version of the code
whose classes differ takes nothing (:class:`StateError`) and starts empty rather than
misread numbers. ``FORMAT`` changes when the layout of this dict does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Final

from aggregator.counting.cells import Group, Held, RawCell, RowCell, Sample, slots
from aggregator.counting.sessions import Leaf, Session
from aggregator.counting.windows import Aggregator
from aggregator.release.budget import DaySpend
from aggregator.release.kanon import Pool
from aggregator.release.ledger import Ledger
from collector.dedupe import Deduper
from collector.handover import Dimensions
from collector.ratelimit import RateLimiter
from collector.replay import ReplayGuard

__all__ = [
    "FORMAT",
    "StateError",
    "from_state",
    "limiters_in",
    "replay_in",
    "replay_out",
    "shapes",
    "to_state",
]

FORMAT: Final = 3  # 2: the rate limiters' buckets; 3: rounding steps, the dp budget

_SESSION_FIELDS: Final = tuple(f for f in Session.__slots__ if f not in ("leaf", "dims"))
_LEAF_FIELDS: Final = tuple(Leaf.__slots__)
_RAW_PLAIN: Final = tuple(
    f for f in slots(RawCell) if f not in ("codes", "startups", "latency", "bitrate")
)
_ROW_FIELDS: Final = slots(RowCell)
_DIM_FIELDS: Final = tuple(Dimensions.__slots__)


class StateError(ValueError):
    """A state this code cannot take (another format, other fields, or damaged)."""


def shapes() -> dict[str, tuple[str, ...]]:
    """The fields of every class the state carries, as this code has them."""
    return {
        "session": _SESSION_FIELDS,
        "leaf": _LEAF_FIELDS,
        "raw_cell": _RAW_PLAIN,
        "row_cell": _ROW_FIELDS,
        "dimensions": _DIM_FIELDS,
        "held": tuple(Held.__slots__),
        "sample": tuple(Sample.__slots__),
        "day_spend": tuple(f.name for f in fields(DaySpend)),
    }


# -- out ----------------------------------------------------------------------------------------


def to_state(
    *,
    aggregator: Aggregator,
    ledger: Ledger,
    service: dict[str, Any],
    deduper: Deduper,
    replay: ReplayGuard | None,
    limiters: Sequence[RateLimiter | None] = (),
) -> dict[str, Any]:
    """Everything the next code needs to go on counting as if nothing happened.
    ``replay``: None in a cluster shard (its collectors guard against replays).
    ``limiters``: the rate limiters (per session, per address), whose buckets are keyed by
    opaque handles under the process secret, never by an address or a session id."""
    return {
        "format": FORMAT,
        "shapes": shapes(),
        "aggregator": _aggregator_out(aggregator),
        "ledger": {
            "groups": [_group_out(g) for g in ledger._groups.values()],
            "pools": [(key, _pool_out(pool)) for key, pool in ledger._pools.items()],
            "budget": [_day_out(d) for d in ledger.budget._days.values()],
        },
        "service": service,
        "deduper": (
            deduper._newest,
            deduper._middle,
            deduper._oldest,
            deduper._next_rotation,
        ),
        "replay": None if replay is None else replay_out(replay),
        "limiters": [None if lim is None else lim.handover_state() for lim in limiters],
    }


def _aggregator_out(agg: Aggregator) -> dict[str, Any]:
    dims: dict[Dimensions, int] = {}

    def dim(d: Dimensions) -> int:
        n = dims.get(d)
        if n is None:
            n = dims[d] = len(dims)
        return n

    leaves = [
        (minute, account, stream, dim(d), tuple(getattr(leaf, f) for f in _LEAF_FIELDS))
        for minute, by_key in agg._leaves.items()
        for (account, stream, d), leaf in by_key.items()
    ]
    sessions = [
        (dim(s.dims), tuple(getattr(s, f) for f in _SESSION_FIELDS)) for s in agg._sessions.values()
    ]
    return {
        "open_minute": agg._open_minute,
        "refused": agg._refused,
        "resume_until": agg.resume_until,
        "resumed_from": agg.resumed_from,
        "dimensions": [tuple(getattr(d, f) for f in _DIM_FIELDS) for d in dims],
        "leaves": leaves,
        "sessions": sessions,
        "closed": [_group_out(g) for g in agg._closed],
    }


def _held_out(held: dict[Any, Held] | None) -> dict[Any, tuple[int, set[int]]] | None:
    if held is None:
        return None
    return {name: (h.count, h.viewers) for name, h in held.items()}


def _sample_out(sample: Sample | None) -> dict[int, list[int]] | None:
    return None if sample is None else sample.per


def _raw_out(cell: RawCell) -> tuple[Any, ...]:
    return (
        tuple(getattr(cell, f) for f in _RAW_PLAIN),
        _held_out(cell.codes),
        _held_out(cell.startups),
        _sample_out(cell.latency),
        _sample_out(cell.bitrate),
    )


def _group_out(g: Group) -> tuple[Any, ...]:
    return (
        g.account_id,
        g.granularity,
        int(g.window_start.timestamp()),
        g.window_end,
        g.closed,
        g.changed,
        g.unique_step,
        [(key, _raw_out(cell)) for key, cell in g.cells.items()],
        [(key, tuple(getattr(row, f) for f in _ROW_FIELDS)) for key, row in g.rows.items()],
    )


def _day_out(d: DaySpend) -> tuple[Any, ...]:
    """A dp account's day of budget: its totals and each viewer key's spend (memory only,
    like the viewer keys of open cells)."""
    return tuple(getattr(d, f.name) for f in fields(DaySpend))


def _pool_out(pool: Pool) -> tuple[Any, ...]:
    return (
        [
            (stream, [(bv, _raw_out(cell)) for bv, cell in block.items()])
            for stream, block in pool.blocks.items()
        ],
        [(key, _raw_out(cell)) for key, cell in pool.loose.items()],
        [(key, _raw_out(cell)) for key, cell in pool.values.items()],
    )


# -- in -----------------------------------------------------------------------------------------


def from_state(
    state: dict[str, Any],
    *,
    aggregator: Aggregator,
    ledger: Ledger,
    deduper: Deduper,
    replay: ReplayGuard | None,
    limiters: Sequence[RateLimiter | None] = (),
) -> dict[str, Any]:
    """Fill freshly built (empty) objects from ``state``; returns the service's part of it.
    Raises :class:`StateError` when the state is not one this code can take; the objects
    are then left as they were only if the check fails before anything was filled."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StateError(f"format {state.get('format') if isinstance(state, dict) else '?'}")
    if state.get("shapes") != shapes():
        raise StateError("the classes it carries have other fields in this version")
    try:
        _aggregator_in(state["aggregator"], aggregator)
        ledger._groups = {}
        for packed in state["ledger"]["groups"]:
            g = _group_in(packed)
            ledger._groups[ledger._key(g)] = g
        ledger._pools = {tuple(key): _pool_in(packed) for key, packed in state["ledger"]["pools"]}
        ledger.budget._days = {}
        for packed in state["ledger"]["budget"]:
            d = _day_in(packed)
            ledger.budget._days[(d.account_id, d.day)] = d
        newest, middle, oldest, next_rotation = state["deduper"]
        deduper._newest, deduper._middle, deduper._oldest = newest, middle, oldest
        deduper._next_rotation = float(next_rotation)
        if (state["replay"] is None) != (replay is None):
            raise StateError("a replay guard where none is kept, or none where one is")
        if replay is not None:
            replay_in(state["replay"], replay)
        limiters_in(state["limiters"], limiters)
        service: dict[str, Any] = state["service"]
    except StateError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise StateError(f"damaged ({type(exc).__name__})") from None
    return service


def replay_out(replay: ReplayGuard) -> tuple[Any, ...]:
    """The replay guard's memory (hashes of sealed reports already opened)."""
    return (replay._current, replay._previous, replay._rotated_at)


def replay_in(packed: Sequence[Any], replay: ReplayGuard) -> None:
    current, previous, rotated_at = packed
    replay._current, replay._previous, replay._rotated_at = current, previous, rotated_at


def limiters_in(packed: Sequence[Any], limiters: Sequence[RateLimiter | None]) -> None:
    """The rate limiters' buckets, into ``limiters`` (built alike: the same settings)."""
    if len(packed) != len(limiters):
        raise StateError("another number of rate limiters")
    for limiter, packed_limiter in zip(limiters, packed, strict=True):
        if limiter is not None and packed_limiter is not None:
            limiter.take_over(*packed_limiter)


def _aggregator_in(packed: dict[str, Any], agg: Aggregator) -> None:
    dims = [Dimensions(*values) for values in packed["dimensions"]]
    leaves: dict[int, dict[tuple[str, str, Dimensions], Leaf]] = {}
    for minute, account, stream, d, values in packed["leaves"]:
        leaf = Leaf()
        for name, value in zip(_LEAF_FIELDS, values, strict=True):
            setattr(leaf, name, value)
        leaves.setdefault(minute, {})[(account, stream, dims[d])] = leaf
    sessions: dict[int, Session] = {}
    wheel: dict[int, list[Session]] = {}
    for d, values in packed["sessions"]:
        s = Session.__new__(Session)
        for name, value in zip(_SESSION_FIELDS, values, strict=True):
            setattr(s, name, value)
        s.dims = dims[d]
        s.leaf = leaves.get(s.minute, {}).get((s.account_id, s.stream, s.dims))
        sessions[s.handle] = s
        if s.check_at >= 0:
            wheel.setdefault(s.check_at, []).append(s)
    agg._open_minute = int(packed["open_minute"])
    agg._refused = int(packed["refused"])
    resume_until = float(packed["resume_until"])
    agg.resume_until = resume_until if not math.isnan(resume_until) else float("-inf")
    agg.resumed_from = float(packed["resumed_from"])
    agg._leaves = leaves
    agg._sessions = sessions
    agg._wheel = wheel
    agg._closed = [_group_in(g) for g in packed["closed"]]


def _held_in(packed: dict[Any, tuple[int, set[int]]] | None) -> dict[Any, Held] | None:
    if packed is None:
        return None
    return {name: Held(count, viewers) for name, (count, viewers) in packed.items()}


def _sample_in(packed: dict[int, list[int]] | None) -> Sample | None:
    if packed is None:
        return None
    sample = Sample()
    sample.per = packed
    return sample


def _raw_in(packed: tuple[Any, ...]) -> RawCell:
    plain, codes, startups, latency, bitrate = packed
    cell = RawCell()
    for name, value in zip(_RAW_PLAIN, plain, strict=True):
        setattr(cell, name, value)
    cell.codes = _held_in(codes)
    cell.startups = _held_in(startups)
    cell.latency = _sample_in(latency)
    cell.bitrate = _sample_in(bitrate)
    return cell


def _group_in(packed: tuple[Any, ...]) -> Group:
    account, granularity, start, end, closed, changed, unique_step, cells, rows = packed
    g = Group(account, granularity, datetime.fromtimestamp(start, UTC), end)
    g.closed, g.changed, g.unique_step = closed, changed, unique_step
    g.cells = {tuple(key): _raw_in(cell) for key, cell in cells}
    for key, values in rows:
        row = g.rows[tuple(key)] = RowCell()
        for name, value in zip(_ROW_FIELDS, values, strict=True):
            setattr(row, name, value)
    return g


def _day_in(packed: tuple[Any, ...]) -> DaySpend:
    return DaySpend(*packed)


def _pool_in(packed: tuple[Any, ...]) -> Pool:
    blocks, loose, values = packed
    pool = Pool()
    for stream, block in blocks:
        pool.blocks[stream] = {tuple(bv): _raw_in(cell) for bv, cell in block}
    pool.loose = _keyed(loose)
    pool.values = _keyed(values)
    return pool


def _keyed(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, RawCell]:
    return {tuple(key): _raw_in(cell) for key, cell in pairs}
