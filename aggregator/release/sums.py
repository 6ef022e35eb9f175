"""Whole-cell sums: shown only where at least k distinct viewers contributed to each.

A published cell has >= k viewers, but its sums need not: in a cell of five viewers of
whom four left before the video started, the playing time is the fifth viewer's, to the
millisecond; a failure shown in the one country, device and player row where it happened
describes the one viewer who is French, on mobile and on shaka. k counts the viewers
*behind each number*, not the viewers present. So every sum of a released part —
views (the viewers who started one), playing time, rebuffering (count and time), failures,
exits before start, bitrate changes, concurrency — is shown only if >= k distinct viewers
contributed to it (its *holders*, kept by counting since the first event, with what each
added) and no single one of them gave more than :data:`DOMINANCE` of it.

Complementary, per (stream, breakdown) and sum: the total row's sum minus the shown values'
sums is what the breakdown holds back; that must come from 0 or >= k holders. While the
held-back values' holders are between 1 and k-1, the smallest shown value is held back too;
values the k rules did not publish at all (:mod:`aggregator.release.kanon`'s loose cells) count as
held back. While the stream total holds part of a sum back, its breakdown values show none
of theirs: in a pool the two are made of different minutes' remainders, and total minus
values would be the total's held part. A sum not shown goes, with its holders, into the
release pool of the coarser window under the same row key (as values inside do,
:mod:`aggregator.release.values`), where it is decided again together with what the other
parts held back. Concurrency is not pooled: a
peak is only ever taken from a published minute's shown concurrency.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aggregator.counting.cells import SUMS, RawCell, RowCell, add_amounts

__all__ = ["ALL_SUMS", "DOMINANCE", "counts_part", "safe", "shown_sums", "split"]

Key3 = tuple[str, str, str]

ALL_SUMS: Final = frozenset(SUMS)

# SUMS name -> the RawCell/RowCell fields it covers
_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "views": ("views",),
    "playing": ("playing_ms",),
    "rebuffer": ("rebuffer_count",),
    "rebuffer_ms": ("rebuffer_ms",),
    "failures": ("failures",),
    "exits": ("exits_before_start",),
    "bitrate_changes": ("bitrate_changes",),
    "concurrent": ("concurrent_peak",),
}
_NOT_POOLED: Final = frozenset({"concurrent"})
# A sum is not shown where one viewer gave more than this share of it: it would read as
# that viewer's own amount (the dominance rule of statistical agencies' magnitude tables;
# four viewers stalling a tenth of a second each and one for 50 s are 99 % that one).
DOMINANCE: Final = 0.75


def shown_sums(
    cands: Mapping[Key3, RawCell], forced: Mapping[Key3, RawCell], k: int
) -> dict[Key3, frozenset[str]]:
    """For every candidate cell, the sums it may show (see the module docstring).

    ``cands``: the cells being released now (with pooled remainders added); ``forced``:
    cells of the same streams held back whole by the k rules (never shown now)."""
    shown: dict[Key3, set[str]] = {key: set() for key in cands}
    # (stream, breakdown) -> value -> (the candidate cell, the cell held back whole)
    by_breakdown: dict[tuple[str, str], dict[str, list[RawCell | None]]] = {}
    for (stream, breakdown, value), cell in cands.items():
        if breakdown:
            by_breakdown.setdefault((stream, breakdown), {})[value] = [cell, None]
        else:
            for name, holders in cell.holders.items():
                if safe(holders, k):
                    shown[(stream, "", "")].add(name)
    for (stream, breakdown, value), cell in forced.items():
        items = by_breakdown.get((stream, breakdown))
        if breakdown and items is not None:
            items.setdefault(value, [None, None])[1] = cell
    for (stream, breakdown), items in by_breakdown.items():
        total = cands.get((stream, "", ""))
        for name in SUMS:
            if (
                total is not None
                and total.holders.get(name)
                and name not in shown[(stream, "", "")]
            ):
                # the total holds part of this sum back: its values hold theirs back too,
                # or total - values would be that held part (pooled from other minutes)
                continue
            for value in _complementary(items, name, k):
                shown[(stream, breakdown, value)].add(name)
    return {key: frozenset(names) for key, names in shown.items()}


def _complementary(items: dict[str, list[RawCell | None]], name: str, k: int) -> list[str]:
    """The values of one (stream, breakdown) that show sum ``name``: each safe on its own,
    and what the others hold back together from 0 viewers or safe (>= k, not dominated)."""
    big: list[tuple[int, str]] = []
    held: dict[int, int] = {}
    for value, (cand, whole) in sorted(items.items()):
        if whole is not None:
            add_amounts(held, whole.holders.get(name, {}))
        holders = cand.holders.get(name) if cand is not None else None
        if not holders:
            continue
        if safe(holders, k):
            big.append((len(holders), value))
        else:
            add_amounts(held, holders)
    big.sort()
    while held and not safe(held, k) and big:
        _, value = big.pop(0)
        cand = items[value][0]
        assert cand is not None
        add_amounts(held, cand.holders[name])
    return [value for _, value in big]


def safe(amounts: Mapping[int, int], k: int) -> bool:
    """A sum may be shown: >= k viewers gave to it and none gave more than DOMINANCE of it."""
    if len(amounts) < k:
        return False
    total = sum(amounts.values())
    return max(amounts.values()) <= DOMINANCE * total


def split(cell: RawCell, shown: frozenset[str]) -> tuple[RowCell, RawCell | None]:
    """The part to publish (the cell's viewers and its shown sums) and the remainder to pool
    (the sums not shown, with their holders; None if there is none)."""
    part = RowCell()
    part.viewers = set(cell.viewers)
    rest: RawCell | None = None
    for name, fields in _FIELDS.items():
        if name in shown:
            for f in fields:
                setattr(part, f, getattr(cell, f))
            continue
        holders = cell.holders.get(name)
        if not holders or name in _NOT_POOLED:
            continue
        if rest is None:
            rest = RawCell()
        for f in fields:
            setattr(rest, f, getattr(cell, f))
        rest.holders[name] = holders
    return part, rest


def counts_part(cell: RawCell) -> RowCell:
    """Every sum of the cell as a part (dp mode: the noise, not the holders, protects them)."""
    return split(cell, ALL_SUMS)[0]
