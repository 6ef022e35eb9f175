"""A differencing auditor: tries to recover fewer than k viewers from everything released.

The traffic is made of *atoms*: playback sessions that each live inside one minute, with
playing and rebuffering times drawn to the millisecond, so that a sum of atoms is (in
practice) recognisable. The auditor is given every release — every version of every row
a customer could read, in the order they appeared — and the atoms behind the traffic. For
every single-step derived number it tries to explain that number with the data of fewer
than k viewers:

- each row on its own;
- a coarse row minus the finer rows of the same key it covers (hour - its minutes,
  day - its hours);
- a stream total minus the values of one of its breakdowns;
- version n+1 of a row minus version n;
- the values inside a row (an error code's count, the latency sum and count, the number
  of startups), and the same for each of the differences above.

A number "is explained" by a set of viewers when some atoms of theirs, among the atoms the
row could include (same stream and value in the window; ``(other)`` matches anything),
add up to it exactly in every whole-cell count (views, playing ms, rebuffer count and ms,
failures, exits before start); for values inside (codes, latency, startups), when the
atoms holding that value belong to fewer than k viewers (a single sum of latencies is not
telling enough to be matched against subsets without false alarms). A non-zero number
explained by 1..k-1 viewers is a violation: that is a person (or a handful) recovered
from what was published. The last check is about concurrency: an hour's or day's peak
may not exceed every published minute peak of its key (a peak from a hidden minute).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

OTHER = "(other)"
DIMS = ("country", "device", "os", "browser", "player")
SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
COARSER = {"minute": "hour", "hour": "day"}
COUNTS = ("views", "playing_ms", "rebuffer_count", "rebuffer_ms", "failures", "exits")


@dataclass(frozen=True)
class Atom:
    """One session, inside one minute (``minute``: unix minute of its events' arrival)."""

    viewer: int
    stream: str
    minute: int
    dims: tuple[tuple[str, str], ...]
    views: int = 1
    playing_ms: int = 0
    rebuffer_count: int = 0
    rebuffer_ms: int = 0
    failures: int = 0
    exits: int = 0
    code: str | None = None
    latency_ms: int | None = None
    startup: bool = False

    def dim(self, name: str) -> str:
        return dict(self.dims)[name]

    def counts(self) -> tuple[int, ...]:
        return tuple(getattr(self, c) for c in COUNTS)


RowKey = tuple[str, int, str, str, str]  # (granularity, window start, stream, breakdown, value)


@dataclass
class Row:
    views: int
    playing_ms: int
    rebuffer_count: int
    rebuffer_ms: int
    failures: int
    exits: int
    unique_viewers: int
    codes: dict[str, int]
    latency_sum: int
    latency_count: int
    startups: int
    peak: int

    @classmethod
    def from_api(cls, r: Mapping[str, Any]) -> Row:
        """From a stored/exported cell (``playing_seconds`` etc.)."""
        return cls(
            views=int(r["views"]),
            playing_ms=round(float(r["playing_seconds"]) * 1000),
            rebuffer_count=int(r["rebuffer_count"]),
            rebuffer_ms=round(float(r["rebuffer_seconds"]) * 1000),
            failures=int(r["failures"]),
            exits=int(r["exits_before_start"]),
            unique_viewers=int(r["unique_viewers"]),
            codes={str(c): int(n) for c, n in dict(r["failures_by_code"]).items() if n},
            latency_sum=round(float(r["latency_ms_sum"])),
            latency_count=int(r["latency_count"]),
            startups=sum(int(n) for n in r["startup_hist"]),
            peak=int(r["concurrent_peak"]),
        )

    def counts(self) -> tuple[int, ...]:
        return (
            self.views,
            self.playing_ms,
            self.rebuffer_count,
            self.rebuffer_ms,
            self.failures,
            self.exits,
        )


ZERO = Row(0, 0, 0, 0, 0, 0, 0, {}, 0, 0, 0, 0)


@dataclass
class Violation:
    check: str
    key: RowKey
    what: str
    viewers: tuple[int, ...]

    def __str__(self) -> str:
        g, ws, s, b, v = self.key
        return f"{self.check}: {g} {ws} {s!r} {b or 'total'}={v!r}: {self.what} <- {self.viewers}"


@dataclass
class Auditor:
    atoms: Sequence[Atom]
    k: int
    violations: list[Violation] = field(default_factory=list)

    # -- the checks --------------------------------------------------------------------------

    def audit(self, releases: Sequence[Mapping[RowKey, Row]]) -> list[Violation]:
        previous: Mapping[RowKey, Row] = {}
        for snapshot in releases:
            for key, row in snapshot.items():
                self._derived("row", key, _diff(row, ZERO), self._candidates(key))
            self._coarse_minus_fine(snapshot)
            self._total_minus_values(snapshot)
            self._peaks(snapshot)
            for key in set(snapshot) | set(previous):
                new, old = snapshot.get(key, ZERO), previous.get(key, ZERO)
                if new != old:
                    self._derived("version", key, _diff(new, old), self._candidates(key))
            previous = snapshot
        return self.violations

    def _coarse_minus_fine(self, snapshot: Mapping[RowKey, Row]) -> None:
        for key, row in snapshot.items():
            g, ws, s, b, v = key
            if g == "minute":
                continue
            finer = "minute" if g == "hour" else "hour"
            step = SECONDS[finer]
            parts = [
                snapshot.get((finer, t, s, b, v), ZERO) for t in range(ws, ws + SECONDS[g], step)
            ]
            d = row
            for p in parts:
                d = _diff(d, p)
            self._derived(f"{g}-minus-{finer}s", key, d, self._candidates(key))

    def _total_minus_values(self, snapshot: Mapping[RowKey, Row]) -> None:
        values: dict[tuple[str, int, str, str], list[Row]] = defaultdict(list)
        for (g, ws, s, b, _v), row in snapshot.items():
            if b:
                values[(g, ws, s, b)].append(row)
        for (g, ws, s, b), rows in values.items():
            total = snapshot.get((g, ws, s, "", ""), ZERO)
            d = total
            for r in rows:
                d = _diff(d, r)
            self._derived(
                "total-minus-values", (g, ws, s, b, "*"), d, self._candidates((g, ws, s, "", ""))
            )

    def _peaks(self, snapshot: Mapping[RowKey, Row]) -> None:
        for key, row in snapshot.items():
            g, ws, s, b, v = key
            if g == "minute" or not row.peak:
                continue
            minutes = [
                snapshot.get(("minute", t, s, b, v), ZERO).peak
                for t in range(ws, ws + SECONDS[g], 60)
            ]
            if row.peak > max(minutes):
                self.violations.append(
                    Violation("peak-from-hidden-minute", key, f"peak {row.peak}", ())
                )

    # -- explaining a number with few viewers --------------------------------------------------

    def _candidates(self, key: RowKey) -> list[Atom]:
        g, ws, s, b, v = key
        start, end = ws // 60, (ws + SECONDS[g]) // 60
        return [
            a
            for a in self.atoms
            if start <= a.minute < end
            and (s == OTHER or a.stream == s)
            and (not b or v in (OTHER, "*") or a.dim(b) == v)
        ]

    def _derived(self, check: str, key: RowKey, d: Row, atoms: list[Atom]) -> None:
        counts = d.counts()
        if any(counts) and all(c >= 0 for c in counts):
            few = _few_viewers_summing_to(counts, atoms, self.k)
            if few:
                self.violations.append(Violation(check, key, f"counts {counts}", few))
        for code, n in d.codes.items():
            if n > 0 and code != OTHER:
                holders = {a.viewer for a in atoms if a.code == code}
                if len(holders) < self.k:
                    self.violations.append(
                        Violation(check, key, f"code {code!r} x{n}", tuple(sorted(holders)))
                    )
        if d.latency_count > 0:
            holders = {a.viewer for a in atoms if a.latency_ms is not None}
            if len(holders) < self.k:
                self.violations.append(
                    Violation(
                        check,
                        key,
                        f"latency {d.latency_sum}/{d.latency_count}",
                        tuple(sorted(holders)),
                    )
                )
        if d.startups > 0:
            holders = {a.viewer for a in atoms if a.startup}
            if len(holders) < self.k:
                self.violations.append(
                    Violation(check, key, f"startups {d.startups}", tuple(sorted(holders)))
                )


def _diff(a: Row, b: Row) -> Row:
    codes = dict(a.codes)
    for c, n in b.codes.items():
        codes[c] = codes.get(c, 0) - n
    return Row(
        a.views - b.views,
        a.playing_ms - b.playing_ms,
        a.rebuffer_count - b.rebuffer_count,
        a.rebuffer_ms - b.rebuffer_ms,
        a.failures - b.failures,
        a.exits - b.exits,
        a.unique_viewers - b.unique_viewers,
        {c: n for c, n in codes.items() if n},
        a.latency_sum - b.latency_sum,
        a.latency_count - b.latency_count,
        a.startups - b.startups,
        0,
    )


def _few_viewers_summing_to(
    target: tuple[int, ...],
    atoms: Iterable[Atom],
    k: int,
    vector: Any = Atom.counts,
) -> tuple[int, ...] | None:
    """Viewers (fewer than k) some of whose atoms add up to ``target`` exactly, or None."""
    by_viewer: dict[int, list[tuple[int, ...]]] = defaultdict(list)
    for a in atoms:
        by_viewer[a.viewer].append(vector(a))
    options: dict[int, set[tuple[int, ...]]] = {}
    for viewer, vecs in by_viewer.items():
        sums: set[tuple[int, ...]] = set()
        for r in range(1, len(vecs) + 1):
            for combo in combinations(vecs, r):
                s = tuple(map(sum, zip(*combo, strict=True)))
                if all(x <= t for x, t in zip(s, target, strict=True)):
                    sums.add(s)
        if sums:
            options[viewer] = sums
    # states: partial sum -> the viewers used (fewest first)
    states: dict[tuple[int, ...], tuple[int, ...]] = {tuple(0 for _ in target): ()}
    for viewer, sums in options.items():
        new: dict[tuple[int, ...], tuple[int, ...]] = {}
        for partial, who in states.items():
            if len(who) >= k - 1:
                continue
            for s in sums:
                total = tuple(a + b for a, b in zip(partial, s, strict=True))
                if all(x <= t for x, t in zip(total, target, strict=True)):
                    known = new.get(total, states.get(total))
                    if known is None or len(known) > len(who) + 1:
                        new[total] = (*who, viewer)
        states.update(new)
        if target in states:
            return states[target]
    return states.get(target) or None
