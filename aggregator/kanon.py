"""k-anonymity (privacy invariant 3): which cells of a group may be published.

Per :class:`~aggregator.cells.Group` (one account, granularity and window), with the
account's ``k`` (never below 2), deterministic and self-contained:

1. **Streams.** A stream is published if its total cell (breakdown ``""``) has >= k
   distinct viewers. Smaller streams are generalised to the stream ``(other)``: all their
   cells merged (viewer sets united, counts added), published if its total has >= k
   viewers, else suppressed. No complementary rule applies here: no account-wide total
   is ever published (stats, exports and the dashboard are per stream), so nothing can be
   subtracted from one; a single lone viewer of a second stream must not hide the first.
2. **Breakdowns**, within each published stream (``(other)`` included), for each breakdown
   (country, device, …): values with >= k viewers are published, smaller ones merged into
   the value ``(other)``. Here the stream total is published, so subtracting the published
   values from it would reveal what was held back: the held-back cells must form a cell
   of >= k viewers or nothing. So ``(other)`` must be empty or reach k, and the stream's
   viewers minus those of the published values (``(other)`` included) must be 0 or >= k;
   while either fails, the smallest published value is moved into ``(other)``; if none is
   left, the whole breakdown of that stream is suppressed (the remainder is then the stream
   itself, >= k viewers).

Ties between equally small cells are broken by name. A stream or value literally named
``(other)`` always goes into ``(other)``. Every raw cell that is not published under its
own key is counted in ``streamtally_cells_suppressed_total{reason}``: ``below_k`` if it
had fewer than k viewers, ``complementary`` if it was moved by a complementary rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import Counter

from aggregator.cells import OTHER, CellKey, CellRow, Group, RawCell

__all__ = ["MIN_K", "anonymise", "anonymise_group"]

MIN_K: Final = 2

SUPPRESSED = Counter(
    "streamtally_cells_suppressed_total",
    "Raw cells not published under their own key (generalised into (other) or suppressed)",
    ["reason"],
)
for _reason in ("below_k", "complementary"):
    SUPPRESSED.labels(_reason)


def anonymise(groups: Sequence[Group], k_of: Callable[[str], int]) -> list[CellRow]:
    """The k-anonymous rows of ``groups``; ``k_of(account_id)`` gives each account's k."""
    rows: list[CellRow] = []
    for g in groups:
        rows.extend(anonymise_group(g, k_of(g.account_id)))
    return rows


@dataclass(slots=True)
class _Decision:
    published: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # members of a published (other)
    below_k: list[str] = field(default_factory=list)  # not published: fewer than k viewers
    moved: list[str] = field(default_factory=list)  # not published: complementary rule


def _partition(
    items: dict[str, set[int]], total: int, k: int, *, strict: bool, complementary: bool = True
) -> _Decision:
    """Split named viewer sets into published ones and (other).

    ``total``: distinct viewers of the whole these items partition. ``strict``: held-back
    items may not be suppressed unless (other) reaches k (the total is published).
    """
    big = sorted((len(vs), name) for name, vs in items.items() if name != OTHER and len(vs) >= k)
    small = sorted(name for name, vs in items.items() if name == OTHER or len(vs) < k)
    other: set[int] = set()
    for name in small:
        other |= items[name]
    moved: list[str] = []
    while True:
        n_other = len(other)
        other_published = n_other >= k
        if not complementary:
            break
        if not strict or n_other == 0 or other_published:
            remainder = total - sum(n for n, _ in big) - (n_other if other_published else 0)
            if not 0 < remainder < k:
                break
        if not big:
            # nothing left to move: hold back everything
            below = [name for name in small if len(items[name]) < k]
            return _Decision(below_k=below, moved=moved)
        _, name = big.pop(0)
        moved.append(name)
        other |= items[name]
    below = [name for name in small if len(items[name]) < k]
    return _Decision(
        published=sorted(name for _, name in big),
        other=small + moved if len(other) >= k else [],
        below_k=below,
        moved=moved,
    )


def anonymise_group(group: Group, k: int) -> list[CellRow]:
    """The k-anonymous rows of one group, sorted by (stream, breakdown, value)."""
    k = max(MIN_K, k)
    by_stream: dict[str, dict[tuple[str, str], RawCell]] = {}
    for (stream, breakdown, value), cell in group.cells.items():
        by_stream.setdefault(stream, {})[(breakdown, value)] = cell
    below_k = complementary = 0

    totals: dict[str, set[int]] = {}
    for stream, cells in by_stream.items():
        total = cells.get(("", ""))
        if total is None or not total.viewers:
            below_k += len(cells)  # nothing to check it against: never published
        else:
            totals[stream] = total.viewers
    account_viewers: set[int] = set().union(*totals.values())
    streams = _partition(totals, len(account_viewers), k, strict=False, complementary=False)
    below_k += sum(len(by_stream[s]) for s in streams.below_k)
    complementary += sum(len(by_stream[s]) for s in streams.moved)

    rows: list[CellRow] = []

    def emit(stream: str, cells: dict[tuple[str, str], RawCell]) -> None:
        nonlocal below_k, complementary
        total = cells[("", "")]
        rows.append(total.to_row(_key(group, stream, "", "")))
        by_breakdown: dict[str, dict[str, RawCell]] = {}
        for (breakdown, value), cell in cells.items():
            if breakdown:
                by_breakdown.setdefault(breakdown, {})[value] = cell
        for breakdown, values in by_breakdown.items():
            d = _partition(
                {v: c.viewers for v, c in values.items()}, len(total.viewers), k, strict=True
            )
            below_k += len(d.below_k)
            complementary += len(d.moved)
            for value in d.published:
                rows.append(values[value].to_row(_key(group, stream, breakdown, value)))
            if d.other:
                merged = RawCell()
                for value in d.other:
                    merged.merge(values[value])
                rows.append(merged.to_row(_key(group, stream, breakdown, OTHER)))

    for stream in streams.published:
        emit(stream, by_stream[stream])
    if streams.other:
        merged_cells: dict[tuple[str, str], RawCell] = {}
        for stream in streams.other:
            for bv, cell in by_stream[stream].items():
                m = merged_cells.get(bv)
                if m is None:
                    m = merged_cells[bv] = RawCell()
                m.merge(cell)
        emit(OTHER, merged_cells)

    if below_k:
        SUPPRESSED.labels("below_k").inc(below_k)
    if complementary:
        SUPPRESSED.labels("complementary").inc(complementary)
    rows.sort(key=lambda r: (r.key.stream, r.key.breakdown, r.key.value))
    return rows


def _key(group: Group, stream: str, breakdown: str, value: str) -> CellKey:
    return CellKey(
        group.account_id, stream, group.granularity, group.window_start, breakdown, value
    )
