"""Closing a minute: its leaves become raw cells, one per (stream, breakdown, value).

A leaf is one (account, stream, dimensions) of the minute; a cell of breakdown ``b`` and
value ``v`` is the sum of the stream's leaves whose dimension ``b`` is ``v`` (the total, ``b``
empty, of all of them). A cell keeps, for every sum, the viewers behind it and what each
added (``RawCell.holders``), so the release can show a sum only where k of them gave to it.

The cells are built one at a time from all of their leaves at once (a dict comprehension per
sum over the cell's viewers), not leaf by leaf: every cell here is new, so nothing is merged
into an existing one, and a viewer behind two leaves of the same cell (two sessions with
different dimensions) is the only case that adds amounts up. This is most of a flush's
time (``benchmarks/storage.py``), so it is written for speed.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from typing import Final

from aggregator.counting.cells import SUMS, Group, RawCell, Sample
from aggregator.counting.histogram import bucket_of
from aggregator.counting.sessions import PER_INDEX, Leaf
from collector.handover import Dimensions

__all__ = ["close_minute"]

# A leaf's per-viewer amounts (Leaf.per) that are cell holders (RawCell.holders, by SUMS
# name): a viewer is behind a sum where their amount is not 0.
_HELD: Final = tuple((name, PER_INDEX[name]) for name in SUMS)
# Sums a leaf holds only when it is ``rare`` (stalls, failures, exits, bitrate changes).
_COMMON: Final = tuple((name, i) for name, i in _HELD if name in ("views", "playing", "concurrent"))
_KBPS_MS: Final = PER_INDEX["kbps_ms"]
_BITRATE_MS: Final = PER_INDEX["bitrate_ms"]

LeafKey = tuple[str, str, Dimensions]  # (account_id, stream, dimensions)


def close_minute(
    leaves: dict[LeafKey, Leaf], minute: int, breakdowns: Sequence[str], slice_leaves: int
) -> Generator[None, None, list[Group]]:
    """The minute's raw cell groups, one per account (``yield from`` it: it yields after
    about every ``slice_leaves`` leaves put into cells, so a caller on an event loop lets
    requests through). The leaves are cleared."""
    start = minute * 60
    by_stream: dict[tuple[str, str], list[tuple[Dimensions, Leaf]]] = {}
    for (account_id, stream, dims), leaf in leaves.items():
        by_stream.setdefault((account_id, stream), []).append((dims, leaf))
    groups: dict[str, Group] = {}
    done, per_slice = 0, slice_leaves * max(1, len(breakdowns))  # a leaf goes into each cell
    for (account_id, stream), members in by_stream.items():
        g = groups.get(account_id)
        if g is None:
            g = groups[account_id] = Group(
                account_id, "minute", datetime.fromtimestamp(start, UTC), start + 60
            )
        buckets = {id(leaf): _buckets(leaf) for _, leaf in members if leaf.startups}
        for b in breakdowns:
            if b:
                split: dict[str, list[Leaf]] = {}
                for dims, leaf in members:
                    split.setdefault(getattr(dims, b), []).append(leaf)
                parts = split.items()
            else:
                parts = {"": [leaf for _, leaf in members]}.items()
            for value, cell_leaves in parts:
                _fill(g.cell(stream, b, value), cell_leaves, buckets)
                done += len(cell_leaves)
                if done >= per_slice:
                    done = 0
                    yield
        for _, leaf in members:
            leaf.clear()
    for g in groups.values():
        g.closed = g.changed = True
    return list(groups.values())


def _buckets(leaf: Leaf) -> list[tuple[int, int]]:
    return [(viewer, bucket_of(ms)) for viewer, ms in leaf.startups or ()]


def _fill(cell: RawCell, leaves: list[Leaf], buckets: dict[int, list[tuple[int, int]]]) -> None:
    """Put ``leaves`` into ``cell``, which is new (nothing in it yet)."""
    viewers = cell.viewers
    per: dict[int, list[int]] = {}
    entries = 0
    views = playing = concurrent = 0
    rare = False
    for leaf in leaves:
        rare = rare or leaf.rare
        viewers.update(leaf.viewers)
        per.update(leaf.per)
        entries += len(leaf.per)
        views += leaf.views
        playing += leaf.playing_ms
        concurrent += leaf.concurrent
    if entries != len(per):  # a viewer behind two of these leaves: add their amounts up
        per = _summed(leaves)
    cell.views = views
    cell.playing_ms = playing
    cell.concurrent_peak = concurrent
    holders = cell.holders
    for name, i in _HELD if rare else _COMMON:
        held = {viewer: amounts[i] for viewer, amounts in per.items() if amounts[i]}
        if held:
            holders[name] = held
    bitrate = {
        viewer: [amounts[_KBPS_MS], amounts[_BITRATE_MS]]
        for viewer, amounts in per.items()
        if amounts[_BITRATE_MS]
    }
    if bitrate:
        sample = cell.bitrate = Sample()
        sample.per = bitrate
    for leaf in leaves:
        if leaf.startups:
            for viewer, bucket in buckets[id(leaf)]:
                cell.add_startup_bucket(bucket, viewer)
        if leaf.rare:
            _add_rare(cell, leaf)


def _summed(leaves: list[Leaf]) -> dict[int, list[int]]:
    """Every viewer's amounts over ``leaves``, added up (new lists where two leaves meet)."""
    out: dict[int, list[int]] = {}
    for leaf in leaves:
        for viewer, amounts in leaf.per.items():
            mine = out.get(viewer)
            if mine is not None:
                amounts = [a + b for a, b in zip(mine, amounts, strict=True)]
            out[viewer] = amounts
    return out


def _add_rare(cell: RawCell, leaf: Leaf) -> None:
    cell.rebuffer_count += leaf.rebuffer_count
    cell.rebuffer_ms += leaf.rebuffer_ms
    cell.failures += leaf.failures
    if leaf.codes is not None:
        for code, code_viewers in leaf.codes.items():
            for viewer in code_viewers:
                cell.add_code(code, viewer)
    cell.exits_before_start += leaf.exits_before_start
    cell.bitrate_changes += leaf.bitrate_changes
    if leaf.latency:
        lat = cell.sample("latency")
        for viewer, (total, weight) in leaf.latency.items():
            lat.add_one(viewer, total, weight)
