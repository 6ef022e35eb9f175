"""Real players' captures (tests/fixtures/cmcd) replayed: the numbers a person counts by
reading the files. Events arrive at their ``ts`` (arrival = ts / 1000), each counted once by
(sid, sn) as the collector's dedupe step does."""

from __future__ import annotations

import json

import pytest

from aggregator.counting.cells import RawCell
from aggregator.counting.histogram import bucket_of
from aggregator.counting.windows import Aggregator
from collector.cmcd import parse
from collector.handover import Dimensions, Event
from tests.captures import CMCD_CAPTURES

FIXTURES = CMCD_CAPTURES


def replay(name: str) -> RawCell:
    """The stream's day cell after replaying one capture (all happen within one day)."""
    handles: dict[str, int] = {}
    seen: set[tuple[object, ...]] = set()
    agg = Aggregator()
    last = 0.0
    for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines():
        request = json.loads(line)
        if request["method"] != "POST" or not request.get("body"):
            continue
        for e in parse(request["body"]).events:
            sid = e.sid or ""
            key = (sid, e.sn) if e.sn is not None else (sid, e.e, e.ts)
            if key in seen:
                continue  # a re-sent event (429 backlog)
            seen.add(key)
            last = max(last, e.ts / 1000)
            agg.submit(
                [
                    Event(
                        account_id="acc",
                        session=handles.setdefault(sid, len(handles) + 1),
                        viewer=1,
                        arrival=e.ts / 1000,
                        stream=e.cid or "(unknown)",
                        kind=e.e,
                        dims=Dimensions(),
                        ts_ms=e.ts,
                        seq=e.sn,
                        state=e.sta,
                        bitrate_kbps=e.br,
                        buffer_ms=e.bl,
                        startup_ms=e.msd,
                        latency_ms=e.ltc,
                        playhead_ms=e.pt,
                        rate=e.pr,
                        error_code=e.ec,
                        response_code=e.rc,
                        ttfb_ms=e.ttfb,
                    )
                ]
            )
    agg.end_all(last)
    day = RawCell()  # the raw sum of the capture's minutes (counting, before any release)
    streams = set()
    for g in agg.take_closed():
        for (stream, b, _v), c in g.cells.items():
            if not b:
                streams.add(stream)
                day.roll_up(c)
    assert len(streams) == 1
    return day


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.jsonl")))
def test_every_capture_is_one_view_of_one_viewer(name: str) -> None:
    cell = replay(name)
    assert (cell.views, len(cell.viewers)) == (1, 1)


def test_hlsjs_main() -> None:
    cell = replay("hlsjs-main")
    # playing (sta=p) spans by ts: 22874-27084, 29592-50278, 51389-53388, 60398-62583,
    # 62591-64631 (ms after 1795480000000) = 31.120 s
    assert cell.playing_ms == 31_120
    # the delayed segments (ttfb 9 s each) stall playback twice: r 50278 -> p 51389 and,
    # after 2 s of playing, r 53388 -> p 60398: 2 rebuffers, 8.121 s. The r at 62584 follows
    # a seek (k at 62583): seeking, not rebuffering.
    assert (cell.rebuffer_count, cell.rebuffer_ms) == (2, 8_121)
    assert (cell.failures, cell.exits_before_start) == (0, 0)
    # startup: s at 22529 -> p at 22874 (hls.js sends no msd)
    assert {i: n for i, n in enumerate(cell.startup_hist) if n} == {bucket_of(345): 1}
    # 1461 kbps until the bc to 345 at 32601: 7.219 s at 1461, 23.901 s at 345
    assert cell.bitrate_ms == 31_120
    assert cell.bitrate_kbps_ms == 1461 * 7_219 + 345 * 23_901
    assert cell.bitrate_changes == 1  # the bc back to 1461 comes after sta=e: not counted


def test_hlsjs_fatal_manifest404() -> None:
    cell = replay("hlsjs-fatal-manifest404")
    assert cell.failures == 1
    assert cell.failures_by_code == {"manifestLoadError": 1}
    # reached sta=s (a view), never played: an exit before video start
    assert (cell.views, cell.exits_before_start, cell.playing_ms) == (1, 1, 0)


def test_shaka_minified_sends_no_states_and_still_gives_view_and_startup() -> None:
    cell = replay("shaka-main")
    assert {i: n for i, n in enumerate(cell.startup_hist) if n} == {bucket_of(207): 1}
    assert (cell.failures, cell.exits_before_start, cell.rebuffer_count) == (0, 0, 0)
    # from the msd event (561540) to the last segment request (612271) + 10 s, bounded by
    # the last event (620385): 58.845 s, pauses and stalls included (nothing tells them apart)
    assert cell.playing_ms == 620_385 - 561_540


def test_shaka_debug_build_states_give_stalls_and_msd_beats_the_computed_startup() -> None:
    cell = replay("shaka-main-debug")
    # r at start (624382) -> p (624510) would be 128 ms; msd=207 arrives 20 ms later and wins
    assert {i: n for i, n in enumerate(cell.startup_hist) if n} == {bucket_of(207): 1}
    # stalls: 649956-653500, 655481-663297, 665097-672524; r after each k is seeking
    assert cell.rebuffer_count == 3
    assert cell.rebuffer_ms == 3_544 + 7_816 + 7_427


def test_hlsjs_status429_resends_out_of_order_count_once() -> None:
    cell = replay("hlsjs-status429")
    assert (cell.views, cell.exits_before_start, cell.failures) == (1, 0, 0)
    assert {i: n for i, n in enumerate(cell.startup_hist) if n} == {bucket_of(219574 - 219188): 1}
