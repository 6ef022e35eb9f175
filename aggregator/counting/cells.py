"""Cells: raw ones in memory (with viewer sets), published ones, and the rows that are stored.

A cell is (account, stream, granularity, window_start, breakdown, value).

- :class:`RawCell`: what counting produced for one minute (or what a release pool holds):
  the viewer keys seen in it, its sums, and its *values inside the cell* — error codes,
  startup-time buckets, latency and bitrate samples — each with the viewers that hold it,
  so that :mod:`aggregator.release.values` can show a value only where k distinct viewers share it.
  It never leaves the process.
- :class:`RowCell`: a published row being built up in memory: the sum of the k-safe parts
  released into it (:mod:`aggregator.release.ledger`), with the union of their viewers for the
  distinct count. Its values inside are plain counts: they were screened part by part.
- :class:`CellRow`: what is stored: counts only, no viewer key.
- :class:`Group`: every published row of one (account, granularity, window_start): the unit
  the writer rewrites (with a higher version) while its window is open.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from aggregator.counting.histogram import BUCKETS

__all__ = [
    "COLUMNS",
    "GRANULARITIES",
    "MAX_ERROR_CODES",
    "OTHER",
    "PARTS_ADDED_UP",
    "SUMS",
    "CellKey",
    "CellRow",
    "Group",
    "Held",
    "RawCell",
    "RowCell",
    "Sample",
    "Sums",
    "add_amounts",
    "added_up",
    "empty_row",
    "row_values",
    "slots",
]

GRANULARITIES: Final = ("minute", "hour", "day")
OTHER: Final = "(other)"  # generalised stream, dimension value or error code
MAX_ERROR_CODES: Final = 10  # failures_by_code keeps the top codes, the rest under (other)
MAX_ERROR_CODE_LENGTH: Final = 64

Key3 = tuple[str, str, str]  # (stream, breakdown, value)

# Table order of aggregator/storage/migrations/0002_cells.sql; the writer appends its own columns
# (part, retention_days, version, is_deleted) after these.
COLUMNS: Final[tuple[str, ...]] = (
    "account_id",
    "stream",
    "granularity",
    "window_start",
    "breakdown",
    "value",
    "views",
    "unique_viewers",
    "playing_seconds",
    "startup_hist",
    "rebuffer_count",
    "rebuffer_seconds",
    "failures",
    "failures_by_code",
    "exits_before_start",
    "bitrate_kbps_seconds",
    "bitrate_seconds",
    "bitrate_changes",
    "latency_ms_sum",
    "latency_count",
    "concurrent_peak",
)

# How the rows of one cell written by several process runs (`part`) combine when read: one
# place for the stats API and the export. Runs follow each other (a cold restart; a hot
# restart keeps its run), so counts and sums add up: histograms element-wise, error codes
# key by key, distinct viewers too (an upper bound: the viewer secret does not survive a
# cold restart, on purpose). A concurrent peak is the larger of the runs' peaks: in the
# minute of a restart both runs saw the same playbacks, and adding them would count each
# twice.
PARTS_ADDED_UP: Final[dict[str, str]] = {
    **{
        name: f"sum({name})"
        for name in COLUMNS[6:]
        if name not in ("startup_hist", "failures_by_code", "concurrent_peak")
    },
    "startup_hist": "sumForEach(startup_hist)",
    "failures_by_code": "sumMap(failures_by_code)",
    "concurrent_peak": "max(concurrent_peak)",
}


def added_up(*columns: str) -> str:
    """``sum(views) AS views, …``: the select list of ``columns`` summed over parts."""
    return ",\n    ".join(f"{PARTS_ADDED_UP[c]} AS {c}" for c in columns)


@dataclass(frozen=True, slots=True)
class CellKey:
    account_id: str
    stream: str
    granularity: str  # minute | hour | day
    window_start: datetime  # UTC, tz-aware
    breakdown: str  # "" (stream total) or country | device | os | browser | player
    value: str  # "" for the stream total, else the dimension value or (other)


@dataclass(slots=True)
class CellRow:
    """A published, k-anonymous cell. Holds no viewer keys."""

    key: CellKey
    views: int = 0
    unique_viewers: int = 0
    playing_seconds: float = 0.0
    startup_hist: list[int] = field(default_factory=lambda: [0] * BUCKETS)
    rebuffer_count: int = 0
    rebuffer_seconds: float = 0.0
    failures: int = 0
    failures_by_code: dict[str, int] = field(default_factory=dict)
    exits_before_start: int = 0
    bitrate_kbps_seconds: float = 0.0
    bitrate_seconds: float = 0.0
    bitrate_changes: int = 0
    latency_ms_sum: float = 0.0
    latency_count: int = 0
    concurrent_peak: int = 0


def empty_row(key: CellKey) -> CellRow:
    """A row of zeros (the writer's tombstones)."""
    return CellRow(key)


def row_values(row: CellRow) -> list[Any]:
    """The row's values in ``COLUMNS`` order."""
    k = row.key
    return [
        k.account_id,
        k.stream,
        k.granularity,
        k.window_start,
        k.breakdown,
        k.value,
        row.views,
        row.unique_viewers,
        row.playing_seconds,
        row.startup_hist,
        row.rebuffer_count,
        row.rebuffer_seconds,
        row.failures,
        row.failures_by_code,
        row.exits_before_start,
        row.bitrate_kbps_seconds,
        row.bitrate_seconds,
        row.bitrate_changes,
        row.latency_ms_sum,
        row.latency_count,
        row.concurrent_peak,
    ]


# ---- values inside a cell, with who holds them ----------------------------------------------


class Held:
    """How often a value (an error code, a startup bucket) occurred, and by which viewers."""

    __slots__ = ("count", "viewers")

    def __init__(self, count: int = 0, viewers: set[int] | None = None) -> None:
        self.count = count
        self.viewers: set[int] = set() if viewers is None else viewers

    def add(self, other: Held) -> None:
        self.count += other.count
        self.viewers |= other.viewers


class Sample:
    """Samples of one kind (latency in ms, or bitrate-weighted time) per viewer.

    ``per[viewer] = [total, weight]``: latency: sum of ms and number of samples; bitrate:
    sum of kbps * ms played and ms played at a known bitrate. An average is shown with every
    viewer weighing the same (:meth:`mean_sum`): one viewer who sends 2,000 samples, or
    watches for an hour, cannot make a cell's average their own."""

    __slots__ = ("per",)

    def __init__(self) -> None:
        self.per: dict[int, list[int]] = {}

    def add_one(self, viewer: int, total: int, weight: int) -> None:
        mine = self.per.get(viewer)
        if mine is None:
            self.per[viewer] = [total, weight]
        else:
            mine[0] += total
            mine[1] += weight

    def add(self, other: Sample) -> None:
        for viewer, (total, weight) in other.per.items():
            self.add_one(viewer, total, weight)

    @property
    def viewers(self) -> set[int]:
        return {v for v, (_, w) in self.per.items() if w}

    @property
    def total(self) -> int:
        return sum(t for t, _ in self.per.values())

    @property
    def weight(self) -> int:
        return sum(w for _, w in self.per.values())

    def mean_sum(self) -> float:
        """The sum over viewers of each viewer's own average (divide by their number)."""
        return sum(t / w for t, w in self.per.values() if w)


# Whole-cell sums and the viewers behind each (``RawCell.holders``): a sum is shown only
# where >= k distinct viewers contributed to it (aggregator/release/sums.py). ``concurrent``: the
# viewers playing in the minute (the concurrency count and so the peak).
SUMS: Final = (
    "views",
    "playing",
    "rebuffer",  # stalls started
    "rebuffer_ms",  # time stalled
    "failures",
    "exits",
    "bitrate_changes",
    "concurrent",
)


def _merge_held(into: dict[Any, Held] | None, other: dict[Any, Held] | None) -> dict[Any, Held]:
    out: dict[Any, Held] = {} if into is None else into
    if other:
        for name, held in other.items():
            mine = out.get(name)
            if mine is None:
                out[name] = Held(held.count, set(held.viewers))
            else:
                mine.add(held)
    return out


class Sums:
    """The seven whole-cell sums a raw cell and a published row share (durations in ms),
    and the viewers counted in them."""

    __slots__ = (
        "bitrate_changes",
        "concurrent_peak",
        "exits_before_start",
        "failures",
        "playing_ms",
        "rebuffer_count",
        "rebuffer_ms",
        "viewers",
        "views",
    )

    def __init__(self) -> None:
        self.viewers: set[int] = set()
        self.views = 0
        self.playing_ms = 0
        self.rebuffer_count = 0
        self.rebuffer_ms = 0
        self.failures = 0
        self.exits_before_start = 0
        self.bitrate_changes = 0
        self.concurrent_peak = 0

    def _add_sums(self, other: Sums) -> None:
        """Viewers and the additive sums (not the concurrency: callers decide how it adds)."""
        self.viewers |= other.viewers
        self.views += other.views
        self.playing_ms += other.playing_ms
        self.rebuffer_count += other.rebuffer_count
        self.rebuffer_ms += other.rebuffer_ms
        self.failures += other.failures
        self.exits_before_start += other.exits_before_start
        self.bitrate_changes += other.bitrate_changes


def add_amounts(into: dict[int, int], amounts: Mapping[int, int]) -> None:
    """Add per-viewer amounts (of one sum) into ``into``."""
    if into.keys().isdisjoint(amounts):  # the common case: other viewers
        into.update(amounts)
    else:
        for viewer, amount in amounts.items():
            into[viewer] = into.get(viewer, 0) + amount


def slots(cls: type) -> tuple[str, ...]:
    """Every slot of ``cls`` and its bases (the fields of a slotted object)."""
    return tuple(sorted({f for c in cls.__mro__ for f in getattr(c, "__slots__", ())}))


class RawCell(Sums):
    """One cell in memory: viewers, sums (durations in ms), values inside with their holders.

    Sums that describe the cell as a whole (views, playing time, rebuffers, failures, exits,
    bitrate changes, concurrency) carry the viewers behind them (``holders``, by ``SUMS``
    name) and are shown only where k of them contributed (:mod:`aggregator.release.sums`); values
    inside (``codes``, ``startups``, ``latency``, ``bitrate``) only where k distinct viewers
    share them (:mod:`aggregator.release.values`).
    """

    __slots__ = ("bitrate", "codes", "holders", "latency", "startups")

    def __init__(self) -> None:
        super().__init__()
        # SUMS name -> viewer -> what that viewer added to the sum (ms for playing, else a
        # count): who is behind a sum (k of them to show it) and, in dp mode, the per-viewer
        # amounts that are clamped to the mechanism's bounds
        self.holders: dict[str, dict[int, int]] = {}
        self.codes: dict[str, Held] | None = None  # error code -> failures with it
        self.startups: dict[int, Held] | None = None  # histogram bucket -> startups in it
        self.latency: Sample | None = None
        self.bitrate: Sample | None = None

    # -- filling ------------------------------------------------------------------------------

    def add_code(self, code: str, viewer: int, count: int = 1) -> None:
        codes = self.codes
        if codes is None:
            codes = self.codes = {}
        code = code[:MAX_ERROR_CODE_LENGTH]
        held = codes.get(code)
        if held is None:
            held = codes[code] = Held()
        held.count += count
        held.viewers.add(viewer)

    def add_startup_bucket(self, bucket: int, viewer: int) -> None:
        startups = self.startups
        if startups is None:
            startups = self.startups = {}
        held = startups.get(bucket)
        if held is None:
            held = startups[bucket] = Held()
        held.count += 1
        held.viewers.add(viewer)

    def sample(self, which: str) -> Sample:
        """The latency or bitrate sample, created on first use."""
        s: Sample | None = getattr(self, which)
        if s is None:
            s = Sample()
            setattr(self, which, s)
        return s

    def has_values_inside(self) -> bool:
        return bool(self.codes or self.startups or self.latency or self.bitrate)

    def is_empty(self) -> bool:
        """Nothing held: no viewers, no sums and no values inside."""
        return not (self.viewers or self.holders or self.has_values_inside())

    def hold(self, name: str, amounts: Mapping[int, int]) -> None:
        mine = self.holders.get(name)
        if mine is None:
            self.holders[name] = dict(amounts)
        else:
            add_amounts(mine, amounts)

    def add_sums(self, other: RawCell) -> None:
        """Add another cell's viewers, sums with their holders, and values inside."""
        self._add_sums(other)
        for name, viewers in other.holders.items():
            self.hold(name, viewers)
        self.add_values_inside(other)

    def add_values_inside(self, other: RawCell) -> None:
        if other.codes:
            self.codes = _merge_held(self.codes, other.codes)
        if other.startups:
            self.startups = _merge_held(self.startups, other.startups)
        if other.latency is not None:
            self.sample("latency").add(other.latency)
        if other.bitrate is not None:
            self.sample("bitrate").add(other.bitrate)

    def merge(self, other: RawCell) -> None:
        """Add a cell of the same window (generalising into (other)): sessions are disjoint,
        so concurrency adds up (an upper bound where one viewer plays two streams)."""
        self.add_sums(other)
        self.concurrent_peak += other.concurrent_peak

    def roll_up(self, minute: RawCell) -> None:
        """Add a minute cell into a longer window's cell: the peak is the busiest minute."""
        self.add_sums(minute)
        if minute.concurrent_peak > self.concurrent_peak:
            self.concurrent_peak = minute.concurrent_peak

    # -- read-only views (tests and the counting docs speak in these terms) --------------------

    @property
    def startup_hist(self) -> list[int]:
        hist = [0] * BUCKETS
        for bucket, held in (self.startups or {}).items():
            hist[bucket] += held.count
        return hist

    @property
    def failures_by_code(self) -> dict[str, int]:
        return {code: held.count for code, held in (self.codes or {}).items()}

    @property
    def latency_ms_sum(self) -> int:
        return self.latency.total if self.latency else 0

    @property
    def latency_count(self) -> int:
        return self.latency.weight if self.latency else 0

    @property
    def bitrate_kbps_ms(self) -> int:
        return self.bitrate.total if self.bitrate else 0

    @property
    def bitrate_ms(self) -> int:
        return self.bitrate.weight if self.bitrate else 0


class RowCell(Sums):
    """A published row in the making: the sum of the k-safe parts released into it.

    ``viewers`` is the union of the parts' viewers (the row's distinct count). Values inside
    are plain counts, screened part by part before they were added.
    """

    __slots__ = (
        "bitrate_kbps_ms",
        "bitrate_ms",
        "codes",
        "dp_parts",
        "dp_viewers",
        "latency_count",
        "latency_ms_sum",
        "startup_hist",
    )

    def __init__(self) -> None:
        super().__init__()
        # dp mode (aggregator/release/noise.py): the sum of the parts' noisy viewer counts, shown
        # instead of len(viewers); -1 when the row is not noisy. dp_parts: noisy parts in it.
        self.dp_viewers = -1
        self.dp_parts = 0
        self.startup_hist: list[int] = [0] * BUCKETS
        self.codes: dict[str, int] = {}
        self.latency_ms_sum = 0
        self.latency_count = 0
        self.bitrate_kbps_ms = 0
        self.bitrate_ms = 0

    def add(self, part: RowCell, *, peak: bool = True) -> None:
        """Add a released part. ``peak``: the part is a published minute (its concurrency
        is a fact shown); remainders carry none (a peak from hidden minutes would show them)."""
        self._add_sums(part)
        if part.dp_viewers >= 0:
            self.dp_viewers = max(self.dp_viewers, 0) + part.dp_viewers
            self.dp_parts += part.dp_parts
        if peak and part.concurrent_peak > self.concurrent_peak:
            self.concurrent_peak = part.concurrent_peak
        if any(part.startup_hist):
            self.startup_hist = list(map(operator.add, self.startup_hist, part.startup_hist))
        for code, n in part.codes.items():
            self.codes[code] = self.codes.get(code, 0) + n
        self.latency_ms_sum += part.latency_ms_sum
        self.latency_count += part.latency_count
        self.bitrate_kbps_ms += part.bitrate_kbps_ms
        self.bitrate_ms += part.bitrate_ms

    def to_row(self, key: CellKey, unique_step: int = 1) -> CellRow:
        """The stored row. ``unique_step``: the distinct viewer count is rounded down to a
        multiple of it (the account's k). Distinct counts do not add up: the hour's count
        minus its first minute's is how many viewers were new after it, a total's minus the
        sum of its values' is how many used two of them, and each can be one person. Counts
        in steps of k make every such difference 0 or >= k."""
        codes = self.codes
        if len(codes) > MAX_ERROR_CODES:
            ranked = sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))
            top = dict(ranked[: MAX_ERROR_CODES - 1])
            top[OTHER] = top.get(OTHER, 0) + sum(n for _, n in ranked[MAX_ERROR_CODES - 1 :])
            codes = top
        return CellRow(
            key=key,
            views=self.views,
            unique_viewers=(
                self.dp_viewers
                if self.dp_viewers >= 0
                else len(self.viewers) // unique_step * unique_step
            ),
            playing_seconds=self.playing_ms / 1000.0,
            startup_hist=list(self.startup_hist),
            rebuffer_count=self.rebuffer_count,
            rebuffer_seconds=self.rebuffer_ms / 1000.0,
            failures=self.failures,
            failures_by_code=dict(codes),
            exits_before_start=self.exits_before_start,
            bitrate_kbps_seconds=self.bitrate_kbps_ms / 1000.0,
            bitrate_seconds=self.bitrate_ms / 1000.0,
            bitrate_changes=self.bitrate_changes,
            latency_ms_sum=float(self.latency_ms_sum),
            latency_count=self.latency_count,
            concurrent_peak=self.concurrent_peak,
        )


class Group:
    """Every cell of one (account, granularity, window_start), keyed by (stream, breakdown,
    value): raw cells (``cells``) when counting hands a closed minute over, published rows
    (``rows``) when the release hands a group to the writer. ``closed``: the window is over
    and these are final."""

    __slots__ = (
        "account_id",
        "cells",
        "changed",
        "closed",
        "granularity",
        "rows",
        "unique_step",
        "window_end",
        "window_start",
    )

    def __init__(
        self, account_id: str, granularity: str, window_start: datetime, window_end: float
    ) -> None:
        self.account_id = account_id
        self.granularity = granularity
        self.window_start = window_start
        self.window_end = window_end  # unix seconds
        self.closed = False
        self.changed = True
        self.cells: dict[Key3, RawCell] = {}
        self.rows: dict[Key3, RowCell] = {}
        # published distinct counts are rounded down to a multiple of this (the account's k):
        # see RowCell.to_row
        self.unique_step = 1

    def cell(self, stream: str, breakdown: str, value: str) -> RawCell:
        key = (stream, breakdown, value)
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = RawCell()
        return c

    def row(self, key: Key3) -> RowCell:
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = RowCell()
        return r

    def to_rows(self) -> list[CellRow]:
        """The published rows, sorted by (stream, breakdown, value)."""
        return [
            row.to_row(
                CellKey(self.account_id, s, self.granularity, self.window_start, b, v),
                self.unique_step,
            )
            for (s, b, v), row in sorted(self.rows.items())
        ]

    def __repr__(self) -> str:
        return (
            f"Group({self.account_id!r}, {self.granularity}, {self.window_start.isoformat()}, "
            f"cells={len(self.cells)}, rows={len(self.rows)}, closed={self.closed})"
        )
