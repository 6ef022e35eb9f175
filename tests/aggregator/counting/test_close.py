"""Closing a minute (aggregator/counting/close.py): each cell built from all its leaves at
once equals the cell built by adding its leaves one by one, for any leaves, including a
viewer behind two leaves of the same cell (two sessions on one stream, other devices)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.counting.cells import SUMS, RawCell
from aggregator.counting.close import close_minute
from aggregator.counting.histogram import bucket_of
from aggregator.counting.sessions import PER_INDEX, PER_SIZE, Leaf
from aggregator.counting.windows import DEFAULT_BREAKDOWNS
from collector.handover import Dimensions

MINUTE = 29_000_000


def _one_by_one(cell: RawCell, leaf: Leaf) -> None:
    """The plain definition: add one leaf's sums, holders and values into a cell."""
    cell.viewers.update(leaf.viewers)
    cell.views += leaf.views
    cell.playing_ms += leaf.playing_ms
    cell.concurrent_peak += leaf.concurrent
    for name in SUMS:
        amounts = {v: a[PER_INDEX[name]] for v, a in leaf.per.items() if a[PER_INDEX[name]]}
        if amounts:
            cell.hold(name, amounts)
    for viewer, a in leaf.per.items():
        if a[PER_INDEX["bitrate_ms"]]:
            cell.sample("bitrate").add_one(
                viewer, a[PER_INDEX["kbps_ms"]], a[PER_INDEX["bitrate_ms"]]
            )
    for viewer, ms in leaf.startups or ():
        cell.add_startup_bucket(bucket_of(ms), viewer)
    cell.rebuffer_count += leaf.rebuffer_count
    cell.rebuffer_ms += leaf.rebuffer_ms
    cell.failures += leaf.failures
    for code, viewers in (leaf.codes or {}).items():
        for viewer in viewers:
            cell.add_code(code, viewer)
    cell.exits_before_start += leaf.exits_before_start
    cell.bitrate_changes += leaf.bitrate_changes
    for viewer, (total, weight) in (leaf.latency or {}).items():
        cell.sample("latency").add_one(viewer, total, weight)


def _state(cell: RawCell) -> dict[str, object]:
    return {
        "viewers": set(cell.viewers),
        "sums": (
            cell.views, cell.playing_ms, cell.rebuffer_count, cell.rebuffer_ms, cell.failures,
            cell.exits_before_start, cell.bitrate_changes, cell.concurrent_peak,
        ),
        "holders": {name: dict(h) for name, h in cell.holders.items()},
        "codes": {c: (h.count, set(h.viewers)) for c, h in (cell.codes or {}).items()},
        "startups": {b: (h.count, set(h.viewers)) for b, h in (cell.startups or {}).items()},
        "latency": {v: list(p) for v, p in (cell.latency.per if cell.latency else {}).items()},
        "bitrate": {v: list(p) for v, p in (cell.bitrate.per if cell.bitrate else {}).items()},
    }  # fmt: skip


_RARE = {PER_INDEX[n] for n in ("rebuffer", "rebuffer_ms", "failures", "exits", "bitrate_changes")}
_amounts = st.lists(st.integers(0, 5000), min_size=PER_SIZE, max_size=PER_SIZE)


@st.composite
def leaves(draw: st.DrawFn) -> list[tuple[tuple[str, str, Dimensions], Leaf]]:
    out = []
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["acc_a", "acc_b"]),
                st.sampled_from(["live", "vod"]),
                st.sampled_from(["US", "DE"]),
                st.sampled_from(["desktop", "tv"]),
            ),
            min_size=1,
            max_size=8,
            unique=True,
        )
    )
    for account, stream, country, device in keys:
        leaf = Leaf()
        leaf.rare = draw(st.booleans())  # the rare sums are held only by a rare leaf
        for viewer in draw(st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True)):
            leaf.viewers.append(viewer)
            amounts = draw(_amounts)
            leaf.per[viewer] = mine = [
                a if leaf.rare or i not in _RARE else 0 for i, a in enumerate(amounts)
            ]
            if not mine[PER_INDEX["bitrate_ms"]]:  # kbps x ms only for ms at a known bitrate
                mine[PER_INDEX["kbps_ms"]] = 0
            if draw(st.booleans()):
                leaf.startups = [*(leaf.startups or []), (viewer, draw(st.integers(0, 20_000)))]
            if leaf.rare and draw(st.booleans()):
                leaf.add_code(draw(st.sampled_from(["http-404", "hlsjs-fragLoadError"])), viewer)
                leaf.latency = {**(leaf.latency or {}), viewer: [draw(st.integers(1, 900)), 2]}
        leaf.views = sum(a[PER_INDEX["views"]] for a in leaf.per.values())
        leaf.playing_ms = sum(a[PER_INDEX["playing"]] for a in leaf.per.values())
        leaf.concurrent = sum(1 for a in leaf.per.values() if a[PER_INDEX["concurrent"]])
        if leaf.rare:
            leaf.failures = sum(a[PER_INDEX["failures"]] for a in leaf.per.values())
            leaf.rebuffer_ms = sum(a[PER_INDEX["rebuffer_ms"]] for a in leaf.per.values())
        out.append(((account, stream, Dimensions(country=country, device=device)), leaf))
    return out


def _close(pairs: list[tuple[tuple[str, str, Dimensions], Leaf]]) -> dict[object, object]:
    gen = close_minute(dict(pairs), MINUTE, DEFAULT_BREAKDOWNS, slice_leaves=2)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            groups = stop.value
            break
    return {(g.account_id, key): _state(cell) for g in groups for key, cell in g.cells.items()}


def _reference(pairs: list[tuple[tuple[str, str, Dimensions], Leaf]]) -> dict[object, object]:
    cells: dict[tuple[str, tuple[str, str, str]], RawCell] = {}
    for (account, stream, dims), leaf in pairs:
        for b in DEFAULT_BREAKDOWNS:
            key = (account, (stream, b, getattr(dims, b) if b else ""))
            _one_by_one(cells.setdefault(key, RawCell()), leaf)
    return {key: _state(cell) for key, cell in cells.items()}


@settings(max_examples=150, deadline=None)
@given(leaves())
def test_every_cell_equals_its_leaves_added_one_by_one(
    pairs: list[tuple[tuple[str, str, Dimensions], Leaf]],
) -> None:
    expected = _reference(pairs)
    assert _close(pairs) == expected


def test_a_viewer_behind_two_leaves_of_a_cell_has_their_amounts_added() -> None:
    both = []
    for device, playing in (("desktop", 1_000), ("tv", 2_500)):
        leaf = Leaf()
        leaf.viewers.append(7)
        leaf.per[7] = [0] * PER_SIZE
        leaf.per[7][PER_INDEX["playing"]] = playing
        leaf.playing_ms = playing
        both.append((("acc_a", "live", Dimensions(country="US", device=device)), leaf))
    cells = _close(both)
    total = cells[("acc_a", ("live", "", ""))]
    assert total["holders"] == {"playing": {7: 3_500}}  # type: ignore[index]
    assert cells[("acc_a", ("live", "device", "tv"))]["holders"] == {"playing": {7: 2_500}}  # type: ignore[index]
    assert both[0][1].per == {}  # cleared once closed
    assert both[1][1].per == {}
