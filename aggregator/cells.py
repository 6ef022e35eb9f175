"""Cells: raw ones in memory (with viewer sets), and the k-anonymous rows that are stored.

A cell is (account, stream, granularity, window_start, breakdown, value). A :class:`RawCell`
holds the viewer keys of its window so that distinct counts stay exact when cells are
rolled up (minute → hour → day) or merged into ``(other)``; it never leaves the process.
A :class:`CellRow` is what :func:`aggregator.kanon.anonymise` publishes: counts only.
:class:`Group` is the unit k-anonymity and the writer work on: every raw cell of one
(account, granularity, window_start).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from aggregator.histogram import BUCKETS, bucket_of

__all__ = [
    "COLUMNS",
    "GRANULARITIES",
    "MAX_ERROR_CODES",
    "OTHER",
    "PARTS_ADDED_UP",
    "CellKey",
    "CellRow",
    "Group",
    "RawCell",
    "added_up",
    "empty_row",
    "row_values",
]

GRANULARITIES: Final = ("minute", "hour", "day")
OTHER: Final = "(other)"  # generalised stream or dimension value
MAX_ERROR_CODES: Final = 10  # failures_by_code keeps the top codes, the rest under (other)
MAX_ERROR_CODE_LENGTH: Final = 64

# Table order of aggregator/migrations/0002_cells.sql; the writer appends its own columns
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

# How the rows of one cell written by several process runs (`part`) add up when read: one
# place for the stats API and the export. Distinct viewers and peaks are summed (an upper
# bound across a restart); histograms element-wise; error codes key by key.
PARTS_ADDED_UP: Final[dict[str, str]] = {
    **{
        name: f"sum({name})"
        for name in COLUMNS[6:]
        if name not in ("startup_hist", "failures_by_code")
    },
    "startup_hist": "sumForEach(startup_hist)",
    "failures_by_code": "sumMap(failures_by_code)",
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


class RawCell:
    """One cell in memory: the viewer keys seen in it and its sums (durations in ms)."""

    __slots__ = (
        "bitrate_changes",
        "bitrate_kbps_ms",
        "bitrate_ms",
        "concurrent_peak",
        "exits_before_start",
        "failures",
        "failures_by_code",
        "latency_count",
        "latency_ms_sum",
        "playing_ms",
        "rebuffer_count",
        "rebuffer_ms",
        "startup_hist",
        "viewers",
        "views",
    )

    def __init__(self) -> None:
        self.viewers: set[int] = set()
        self.views = 0
        self.playing_ms = 0
        self.startup_hist: list[int] = [0] * BUCKETS
        self.rebuffer_count = 0
        self.rebuffer_ms = 0
        self.failures = 0
        self.failures_by_code: dict[str, int] = {}
        self.exits_before_start = 0
        self.bitrate_kbps_ms = 0
        self.bitrate_ms = 0
        self.bitrate_changes = 0
        self.latency_ms_sum = 0
        self.latency_count = 0
        self.concurrent_peak = 0

    def add_startup(self, ms: float) -> None:
        self.startup_hist[bucket_of(ms)] += 1

    def add_code(self, code: str, count: int = 1) -> None:
        code = code[:MAX_ERROR_CODE_LENGTH]
        self.failures_by_code[code] = self.failures_by_code.get(code, 0) + count

    def _add_sums(self, other: RawCell) -> None:
        self.viewers |= other.viewers
        self.views += other.views
        self.playing_ms += other.playing_ms
        if any(other.startup_hist):
            self.startup_hist = list(map(operator.add, self.startup_hist, other.startup_hist))
        self.rebuffer_count += other.rebuffer_count
        self.rebuffer_ms += other.rebuffer_ms
        self.failures += other.failures
        for code, n in other.failures_by_code.items():
            self.add_code(code, n)
        self.exits_before_start += other.exits_before_start
        self.bitrate_kbps_ms += other.bitrate_kbps_ms
        self.bitrate_ms += other.bitrate_ms
        self.bitrate_changes += other.bitrate_changes
        self.latency_ms_sum += other.latency_ms_sum
        self.latency_count += other.latency_count

    def merge(self, other: RawCell) -> None:
        """Add a cell of the same window (generalising into (other)): sessions are disjoint,
        so concurrency adds up. For hour/day cells the sum of peaks is an upper bound."""
        self._add_sums(other)
        self.concurrent_peak += other.concurrent_peak

    def roll_up(self, minute: RawCell) -> None:
        """Add a minute cell into its hour or day cell: the peak is the busiest minute."""
        self._add_sums(minute)
        if minute.concurrent_peak > self.concurrent_peak:
            self.concurrent_peak = minute.concurrent_peak

    def to_row(self, key: CellKey) -> CellRow:
        codes = self.failures_by_code
        if len(codes) > MAX_ERROR_CODES:
            ranked = sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))
            top = dict(ranked[: MAX_ERROR_CODES - 1])
            top[OTHER] = top.get(OTHER, 0) + sum(n for _, n in ranked[MAX_ERROR_CODES - 1 :])
            codes = top
        return CellRow(
            key=key,
            views=self.views,
            unique_viewers=len(self.viewers),
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
    """Every raw cell of one (account, granularity, window_start), keyed by
    (stream, breakdown, value). ``closed``: the window is over, these cells are final."""

    __slots__ = (
        "account_id",
        "cells",
        "changed",
        "closed",
        "granularity",
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
        self.cells: dict[tuple[str, str, str], RawCell] = {}

    def cell(self, stream: str, breakdown: str, value: str) -> RawCell:
        key = (stream, breakdown, value)
        c = self.cells.get(key)
        if c is None:
            c = self.cells[key] = RawCell()
        return c

    def __repr__(self) -> str:
        return (
            f"Group({self.account_id!r}, {self.granularity}, {self.window_start.isoformat()}, "
            f"cells={len(self.cells)}, closed={self.closed})"
        )
