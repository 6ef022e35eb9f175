"""k-anonymity (privacy invariant 3): which cells of a pool may be published, and what is held.

A :class:`Pool` is what one release step decides over, for one account and window, with
the account's ``k`` (never below 2). It holds three kinds of raw cells:

- ``blocks``: whole streams (the stream total and all its breakdown cells) of which nothing
  has been published yet: a closed minute's cells, or streams an earlier step held back;
- ``loose``: breakdown values held back inside a stream whose total *was* published,
  keyed under the published stream's name (which may be ``(other)``);
- ``values``: what published cells held back inside them: sums that fewer than k viewers
  contributed to (:mod:`aggregator.release.sums`) and values (error codes, startup buckets, latency,
  bitrate) that fewer than k viewers shared (:mod:`aggregator.release.values`), with their holders.

:func:`release` applies the rules, deterministically, and returns the cells published now
and the pool of what is held back, to be pooled again in the coarser window:

1. **Streams** (blocks). A stream is published if its total has >= k distinct viewers.
   Smaller streams are merged into the stream ``(other)`` (totals and breakdown cells),
   published if its total reaches k, else held back stream by stream. No complementary
   rule applies across streams: no account-wide total is published anywhere, so nothing
   can be subtracted from one.
2. **Breakdowns**, within each published stream, for each breakdown: values with >= k
   viewers are published, smaller ones merged into the value ``(other)``. The stream total
   is published, so the held-back values must cover 0 or >= k viewers: while ``(other)``
   is below k, or the viewers of the total that no published value shows are between 1 and
   k-1, the smallest published value is moved into ``(other)``; if none is left, the whole
   breakdown of that stream is held back (it then covers the stream's >= k viewers).
3. **Loose values** (held back inside published streams) are partitioned per (stream,
   breakdown) by the same rule as 2, against the distinct viewers of all loose cells of
   that (stream, breakdown): what stays held back covers 0 or >= k of them.

Ties between equally small cells are broken by name. A stream or value literally named
``(other)`` always goes into ``(other)``. Raw cells of a closed minute not published under
their own key are counted in ``streamtally_cells_suppressed_total{reason}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, TypeVar

from prometheus_client import Counter

from aggregator.counting.cells import OTHER, RawCell

__all__ = ["MIN_K", "Pool", "release"]

MIN_K: Final = 2

Key3 = tuple[str, str, str]
_K = TypeVar("_K")
Block = dict[tuple[str, str], RawCell]  # (breakdown, value) -> cell; ("", "") the total

SUPPRESSED = Counter(
    "streamtally_cells_suppressed_total",
    "Raw minute cells not published under their own key (generalised, held back for the "
    "coarser window, or never published)",
    ["reason"],
)
for _reason in ("below_k", "complementary", "never_released"):
    SUPPRESSED.labels(_reason)


@dataclass(slots=True)
class Pool:
    """Raw cells not yet published in a window (see the module docstring)."""

    blocks: dict[str, Block] = field(default_factory=dict)
    loose: dict[Key3, RawCell] = field(default_factory=dict)
    values: dict[Key3, RawCell] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.blocks or self.loose or self.values)

    def add_block(self, stream: str, block: Block) -> None:
        mine = self.blocks.get(stream)
        if mine is None:
            self.blocks[stream] = block
            return
        for bv, cell in block.items():
            _merge_into(mine, bv, cell)

    def add_loose(self, key: Key3, cell: RawCell) -> None:
        _merge_into(self.loose, key, cell)

    def add_values(self, key: Key3, cell: RawCell) -> None:
        mine = self.values.get(key)
        if mine is None:
            self.values[key] = cell
        else:
            mine.add_sums(cell)

    def merge(self, other: Pool) -> None:
        for stream, block in other.blocks.items():
            self.add_block(stream, block)
        for key, cell in other.loose.items():
            self.add_loose(key, cell)
        for key, cell in other.values.items():
            self.add_values(key, cell)

    def viewers(self) -> int:
        """Distinct viewers held (for the never-released count)."""
        out: set[int] = set()
        for block in self.blocks.values():
            total = block.get(("", ""))
            if total is not None:
                out |= total.viewers
        return len(out)


def _merge_into(cells: dict[_K, RawCell], key: _K, cell: RawCell) -> None:
    mine = cells.get(key)
    if mine is None:
        cells[key] = cell
    else:
        mine.merge(cell)


@dataclass(slots=True)
class _Decision:
    published: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)  # members of a published (other)
    held: list[str] = field(default_factory=list)  # not published, not in a published (other)
    below_k: int = 0
    moved: int = 0


def _partition(items: dict[str, set[int]], total: int, k: int, *, strict: bool) -> _Decision:
    """Split named viewer sets into published ones, (other), and held back.

    ``total``: distinct viewers of the whole these items partition. ``strict``: the whole is
    published, so what is held back must cover 0 or >= k of its viewers.
    """
    big = sorted((len(vs), name) for name, vs in items.items() if name != OTHER and len(vs) >= k)
    small = sorted(name for name, vs in items.items() if name == OTHER or len(vs) < k)
    other: set[int] = set()
    for name in small:
        other |= items[name]
    moved: list[str] = []
    while strict:
        n_other = len(other)
        if n_other == 0 or n_other >= k:
            shown = sum(n for n, _ in big) + (n_other if n_other >= k else 0)
            if not 0 < total - shown < k:
                break
        if not big:
            return _Decision(held=small + moved, below_k=len(small), moved=len(moved))
        _, name = big.pop(0)
        moved.append(name)
        other |= items[name]
    if len(other) >= k:
        return _Decision(
            published=sorted(name for _, name in big),
            other=small + moved,
            below_k=len(small),
            moved=len(moved),
        )
    return _Decision(
        published=sorted(name for _, name in big),
        held=small + moved,
        below_k=len(small),
        moved=len(moved),
    )


def release(pool: Pool, k: int, *, count: bool = False) -> tuple[dict[Key3, RawCell], Pool]:
    """The cells published from ``pool`` now, and the pool of what is held back.

    ``count``: add the decisions to ``streamtally_cells_suppressed_total`` (for the pool
    of a closed minute, whose cells are raw)."""
    k = max(MIN_K, k)
    published: dict[Key3, RawCell] = {}
    held = Pool()
    below_k = complementary = 0

    totals: dict[str, set[int]] = {}
    for stream, block in pool.blocks.items():
        total = block.get(("", ""))
        if total is not None and total.viewers:
            totals[stream] = total.viewers
        else:
            held.add_block(stream, block)  # nothing to check it against: cannot go out alone
    streams = _partition(totals, len(set().union(*totals.values())), k, strict=False)
    below_k += sum(len(pool.blocks[s]) for s in (*streams.held, *streams.other))
    for stream in streams.held:
        held.add_block(stream, pool.blocks[stream])

    def emit(stream: str, block: Block) -> None:
        nonlocal below_k, complementary
        total = block[("", "")]
        published[(stream, "", "")] = total
        by_breakdown: dict[str, dict[str, RawCell]] = {}
        for (breakdown, value), cell in block.items():
            if breakdown:
                by_breakdown.setdefault(breakdown, {})[value] = cell
        for breakdown, values in by_breakdown.items():
            n_below, n_moved = _emit_values(
                stream, breakdown, values, len(total.viewers), k, published, held
            )
            below_k += n_below
            complementary += n_moved

    for stream in streams.published:
        emit(stream, pool.blocks[stream])
    if streams.other:
        merged: Block = {}
        for stream in streams.other:
            for bv, cell in pool.blocks[stream].items():
                m = merged.get(bv)
                if m is None:
                    m = merged[bv] = RawCell()
                m.merge(cell)
        emit(OTHER, merged)

    by_breakdown: dict[tuple[str, str], dict[str, RawCell]] = {}
    for (stream, breakdown, value), cell in pool.loose.items():
        by_breakdown.setdefault((stream, breakdown), {})[value] = cell
    for (stream, breakdown), values in sorted(by_breakdown.items()):
        seen: set[int] = set()
        for cell in values.values():
            seen |= cell.viewers
        _emit_values(stream, breakdown, values, len(seen), k, published, held)

    for key, cell in pool.values.items():
        held.add_values(key, cell)  # screened by the caller, against the row it belongs to

    if count:
        if below_k:
            SUPPRESSED.labels("below_k").inc(below_k)
        if complementary:
            SUPPRESSED.labels("complementary").inc(complementary)
    return published, held


def _emit_values(
    stream: str,
    breakdown: str,
    values: dict[str, RawCell],
    total: int,
    k: int,
    published: dict[Key3, RawCell],
    held: Pool,
) -> tuple[int, int]:
    d = _partition({v: c.viewers for v, c in values.items()}, total, k, strict=True)
    for value in d.published:
        _merge_into(published, (stream, breakdown, value), values[value])
    if d.other:
        merged = RawCell()
        for value in d.other:
            merged.merge(values[value])
        _merge_into(published, (stream, breakdown, OTHER), merged)
    for value in d.held:
        held.add_loose((stream, breakdown, value), values[value])
    return d.below_k, d.moved
