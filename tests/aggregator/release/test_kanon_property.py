"""k-anonymity over random populations: nothing below k is published or derivable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.counting.cells import OTHER, CellRow
from aggregator.counting.windows import Aggregator
from aggregator.release.ledger import Ledger
from collector.handover import Dimensions
from tests.aggregator.counting.test_sessions import T0, Player
from tests.aggregator.release.test_kanon import assert_k_anonymous

STREAMS = ("a", "b", "c", "d")


@dataclass(frozen=True)
class Watch:
    viewer: int
    stream: str
    minute: int  # 0..2
    dims: Dimensions


@st.composite
def populations(draw: st.DrawFn) -> list[Watch]:
    """Viewers with fixed country/device/os/browser (they come from IP and user agent);
    the player may differ between one viewer's sessions."""
    n = draw(st.integers(1, 40))
    watches: list[Watch] = []
    for viewer in range(n):
        country = draw(st.sampled_from(("DE", "FR", "IT", "PL", OTHER)))
        device = draw(st.sampled_from(("desktop", "mobile", "tv")))
        os = draw(st.sampled_from(("Linux", "Android")))
        browser = draw(st.sampled_from(("Chrome", "Firefox", "Safari")))
        for _ in range(draw(st.integers(1, 3))):
            player = draw(st.sampled_from(("hls.js", "shaka")))
            dims = Dimensions(country=country, device=device, os=os, browser=browser, player=player)
            stream = draw(st.sampled_from(STREAMS))
            watches.append(Watch(viewer, stream, draw(st.integers(0, 2)), dims))
    return watches


def publish(watches: list[Watch], k: int) -> list[CellRow]:
    agg = Aggregator()
    for session, w in enumerate(watches):
        p = Player(agg, session=session, viewer=w.viewer, stream=w.stream, dims=w.dims)
        start = w.minute * 60 + 5.0
        p(start, sta="s")
        p(start + 1, sta="p")
        p(start + 20, sta="e")
    agg.end_all(T0 + 600)
    ledger = Ledger(lambda _a: k)
    for g in agg.take_closed():
        ledger.add_minute(g)
    ledger.advance(T0 + 86_400 + 10)
    return [r for g in ledger.groups() for r in g.to_rows()]


@settings(max_examples=150, deadline=None)
@given(populations(), st.integers(2, 6))
def test_published_rows_never_show_or_imply_fewer_than_k_viewers(
    watches: list[Watch], k: int
) -> None:
    rows = publish(watches, k)
    assert_k_anonymous(rows, k)

    # in a minute, whatever a breakdown holds back is either nothing or the whole stream:
    # so its views and playing time, found by subtraction, cover the stream's >= k viewers
    # (hours and days add remainders: tests/privacy/test_differencing.py audits those)
    rows = [r for r in rows if r.key.granularity == "minute"]
    totals = {
        (r.key.granularity, r.key.window_start, r.key.stream): r
        for r in rows
        if not r.key.breakdown
    }
    sums: dict[tuple[str, datetime, str, str], list[float]] = {}
    for r in rows:
        if r.key.breakdown:
            s = sums.setdefault(
                (r.key.granularity, r.key.window_start, r.key.stream, r.key.breakdown), [0, 0.0]
            )
            s[0] += r.views
            s[1] += r.playing_seconds
    for (gran, ws, stream, _b), (views, playing) in sums.items():
        total = totals[(gran, ws, stream)]
        assert total.views - views == 0
        assert abs(total.playing_seconds - playing) < 1e-6

    # and the numbers published under their own name are the true ones
    for r in rows:
        if r.key.stream == OTHER or r.key.value == OTHER or r.key.breakdown == "player":
            continue
        in_window = [
            w
            for w in watches
            if w.stream == r.key.stream
            and (
                r.key.granularity != "minute"
                or T0 + 60 * w.minute == r.key.window_start.timestamp()
            )
            and (not r.key.breakdown or getattr(w.dims, r.key.breakdown) == r.key.value)
        ]
        assert r.unique_viewers == len({w.viewer for w in in_window}) // k * k  # steps of k
        assert r.views == len(in_window)
