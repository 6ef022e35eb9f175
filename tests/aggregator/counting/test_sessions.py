"""Sessions: scripted players' events in, the numbers a person would count out.

Also home of the small event factory the other aggregator tests use (``Player``, ``finish``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from aggregator.counting.cells import RawCell
from aggregator.counting.histogram import bucket_of
from aggregator.counting.windows import Aggregator
from collector.handover import Dimensions, Event

T0 = 1_795_478_400.0  # 2026-11-24 00:00:00 UTC, a day boundary
ACCOUNT = "acc-1"
DIMS = Dimensions(country="DE", device="desktop", os="Linux", browser="Chrome", player="hls.js")

Cells = dict[tuple[datetime, str, str, str], RawCell]


@dataclass
class Player:
    """One playback session. ``at`` is seconds after T0 on the server clock; the client's
    ``ts`` is the same instant plus ``skew_ms`` (a wrong client clock)."""

    agg: Aggregator
    session: int = 1
    viewer: int = 1
    stream: str = "s1"
    account: str = ACCOUNT
    dims: Dimensions = DIMS
    skew_ms: int = 0
    sent: list[Event] = field(default_factory=list)

    def event(self, at: float, kind: str = "ps", sta: str | None = None, **fields: Any) -> Event:
        ts = fields.pop("ts_at", at)  # client time, if it differs from arrival
        return Event(
            account_id=self.account,
            session=self.session,
            viewer=self.viewer,
            arrival=T0 + at,
            stream=self.stream,
            kind=kind,
            dims=self.dims,
            ts_ms=round((T0 + ts) * 1000) + self.skew_ms,
            state=sta,
            **fields,
        )

    def __call__(self, at: float, kind: str = "ps", sta: str | None = None, **fields: Any) -> None:
        ev = self.event(at, kind, sta, **fields)
        self.sent.append(ev)
        self.agg.submit([ev])


def finish(agg: Aggregator, at: float = 7200.0) -> dict[str, Cells]:
    """End everything at T0 + at and return every raw cell counted, by granularity: the
    closed minutes as counting hands them over, and (for counting tests only) their raw
    sums per hour and day. Nothing raw above a minute is ever published: the release
    (aggregator/release/ledger.py) builds hours and days from what minutes publish."""
    agg.end_all(T0 + at)
    out: dict[str, Cells] = {"minute": {}, "hour": {}, "day": {}}
    for g in agg.take_closed():
        for (stream, b, v), cell in g.cells.items():
            out["minute"][(g.window_start, stream, b, v)] = cell
            for gran, step in (("hour", 3600), ("day", 86400)):
                start = g.window_start.timestamp()
                ws = datetime.fromtimestamp(start - start % step, UTC)
                coarse = out[gran].get((ws, stream, b, v))
                if coarse is None:
                    coarse = out[gran][(ws, stream, b, v)] = RawCell()
                coarse.roll_up(cell)
    return out


def day_total(agg: Aggregator, stream: str = "s1", at: float = 7200.0) -> RawCell:
    """The stream's day cell (all the tests' sessions happen on T0's day)."""
    cells = [c for (_, s, b, _v), c in finish(agg, at)["day"].items() if s == stream and not b]
    assert len(cells) == 1
    return cells[0]


def startups(cell: RawCell) -> dict[int, int]:
    return {i: n for i, n in enumerate(cell.startup_hist) if n}


# -- a normal view ----------------------------------------------------------------------------


def test_normal_view_counts_one_view_its_playing_time_and_startup_from_client_times() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, "t")
    p(0.1, sta="d")
    p(1.0, sta="s")
    p(1.6, sta="p", bitrate_kbps=1500)
    p(10.0, "t", sta="p")
    p(21.6, sta="e")
    cell = day_total(agg)
    assert cell.views == 1
    assert len(cell.viewers) == 1
    assert cell.playing_ms == 20_000
    assert startups(cell) == {bucket_of(600): 1}
    assert (cell.failures, cell.exits_before_start, cell.rebuffer_count) == (0, 0, 0)


@pytest.mark.parametrize(
    ("where", "expected_ms"),
    [
        pytest.param("before_play", 207, id="msd-before-video-start"),
        pytest.param("on_play", 207, id="msd-on-the-playing-event"),
        pytest.param("after_play", 207, id="msd-shortly-after-video-start"),
        pytest.param("never", 600, id="no-msd-startup-from-ts"),
    ],
)
def test_startup_prefers_the_players_msd(where: str, expected_ms: int) -> None:
    agg = Aggregator()
    p = Player(agg)
    p(1.0, sta="s", startup_ms=207 if where == "before_play" else None)
    p(1.6, sta="p", startup_ms=207 if where == "on_play" else None)
    p(1.8, "rr", sta="p", startup_ms=207 if where == "after_play" else None)
    p(30.0, "t", sta="p")
    p(40.0, sta="e")
    assert startups(day_total(agg)) == {bucket_of(expected_ms): 1}


def test_startup_without_msd_is_kept_when_the_view_ends_early() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(1.0, sta="s")
    p(1.4, sta="p")
    p(2.0, sta="q")
    assert startups(day_total(agg)) == {bucket_of(400): 1}


# -- rebuffering ------------------------------------------------------------------------------


def test_a_stall_is_one_rebuffer_with_its_duration() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="s")
    p(0.5, sta="p")
    p(10.0, sta="r")
    p(12.0, "t", sta="r")
    p(13.5, sta="p")
    p(20.0, sta="e")
    cell = day_total(agg)
    assert cell.rebuffer_count == 1
    assert cell.rebuffer_ms == 3_500
    assert cell.playing_ms == 9_500 + 6_500


@pytest.mark.parametrize(
    "states",
    [
        pytest.param(("k", "r", "p"), id="seek-then-buffering"),
        pytest.param(("k", "p"), id="seek"),
    ],
)
def test_buffering_after_a_seek_is_not_a_rebuffer(states: tuple[str, ...]) -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="s")
    p(0.5, sta="p")
    for i, sta in enumerate(states):
        p(5.0 + i, sta=sta)
    p(20.0, sta="e")
    cell = day_total(agg)
    assert (cell.rebuffer_count, cell.rebuffer_ms) == (0, 0)


def test_buffering_before_video_start_is_startup_not_rebuffering() -> None:
    agg = Aggregator()
    p = Player(agg)  # Shaka's debug build starts with sta=r
    p(0.0, sta="r")
    p(0.2, sta="p")
    p(10.0, sta="e")
    cell = day_total(agg)
    assert (cell.views, cell.rebuffer_count, cell.rebuffer_ms) == (1, 0, 0)
    assert startups(cell) == {bucket_of(200): 1}


# -- failures and exits before video start --------------------------------------------------


@pytest.mark.parametrize(
    "code_on",
    [
        pytest.param("error_event_after_f", id="ec-on-a-later-error-event"),
        pytest.param("state_event", id="ec-with-sta-f"),
    ],
)
def test_a_fatal_error_is_a_failure_with_its_code(code_on: str) -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="d")
    p(0.1, sta="s")
    if code_on == "state_event":
        p(0.2, "e", sta="f", error_code="manifestLoadError")
    else:
        p(0.2, sta="f")
        p(0.25, "e", sta="f", error_code="manifestLoadError")
    p(5.0, "t", sta="f")
    cell = day_total(agg)
    assert cell.failures == 1
    assert cell.failures_by_code == {"manifestLoadError": 1}
    assert cell.views == 1
    assert cell.exits_before_start == 1  # a view that never played
    assert cell.playing_ms == 0


def test_a_non_fatal_error_is_not_a_failure() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="s")
    p(0.5, sta="p")
    p(3.0, "e", sta="p", error_code="fragLoadError")
    p(10.0, sta="e")
    cell = day_total(agg)
    assert (cell.failures, cell.failures_by_code) == (0, {})


@pytest.mark.parametrize(
    "how",
    [
        pytest.param("quit", id="explicit-quit"),
        pytest.param("silence", id="idle-timeout"),
    ],
)
def test_exit_before_video_start(how: str) -> None:
    agg = Aggregator(idle_seconds=1800)
    p = Player(agg)
    p(0.0, sta="s")
    p(2.0, "rr", sta="s")
    if how == "quit":
        p(4.0, sta="q")
    else:
        agg.tick(T0 + 1801)  # silent for 1799 s: not yet ended
        assert agg.stats()["active_sessions"] == 1
        agg.tick(T0 + 1900)
        assert agg.stats()["active_sessions"] == 0
    cell = day_total(agg)
    assert (cell.views, cell.exits_before_start, cell.failures) == (1, 1, 0)


def test_a_page_that_never_tries_to_play_is_no_view() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, "t")
    p(0.1, sta="d")
    p(5.0, "t", sta="d")
    cells = finish(agg)
    assert cells["day"] == {}


# -- bitrate and latency ----------------------------------------------------------------------


def test_bitrate_is_time_weighted_by_playing_time_and_switches_are_counted() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="s", bitrate_kbps=1000)
    p(1.0, sta="p", bitrate_kbps=1000)
    p(11.0, "bc", sta="p", bitrate_kbps=4000)
    p(16.0, sta="a", bitrate_kbps=4000)  # paused: no weight
    p(40.0, sta="p", bitrate_kbps=4000)
    p(45.0, sta="e", bitrate_kbps=4000)
    cell = day_total(agg)
    assert cell.bitrate_ms == 20_000
    assert cell.bitrate_kbps_ms / cell.bitrate_ms == (1000 * 10 + 4000 * 10) / 20
    assert cell.bitrate_changes == 1


def test_live_latency_is_summed_and_counted() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="s")
    p(0.5, sta="p", latency_ms=3000)
    p(5.0, "t", sta="p", latency_ms=5000)
    p(6.0, "t", sta="p", latency_ms=-1)  # nonsense: ignored
    cell = day_total(agg)
    assert (cell.latency_ms_sum, cell.latency_count) == (8000, 2)


# -- order, clocks and ends -------------------------------------------------------------------


def test_out_of_order_events_count_once_and_move_no_durations() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="s")
    # the p at 1.0 arrives late, after the pause at 5.0 (a re-sent batch)
    p(5.0, sta="a", ts_at=5.0)
    p(6.0, sta="p", ts_at=1.0)
    p(7.0, sta="p", ts_at=7.0)
    p(10.0, sta="e", ts_at=10.0)
    cell = day_total(agg)
    assert cell.views == 1
    assert cell.exits_before_start == 0  # the late p still means the video started
    assert cell.playing_ms == 3_000  # only 7 -> 10 is known in order


def test_segment_requests_with_old_timestamps_do_not_rewind_state() -> None:
    agg = Aggregator()
    p = Player(agg)  # hls.js stamps rr with the request's start
    p(0.0, sta="s")
    p(0.5, sta="p")
    p(10.0, sta="r")
    p(19.0, "rr", sta="r", ts_at=1.0)
    p(19.5, sta="p")
    p(25.0, sta="e")
    cell = day_total(agg)
    assert cell.rebuffer_ms == 9_500
    assert cell.playing_ms == 9_500 + 5_500


@pytest.mark.parametrize(
    ("gap", "credited_ms"),
    [
        pytest.param(60.0, 60_000, id="one-minute-gap-counted"),
        pytest.param(3600.0, 300_000, id="hour-gap-capped-at-5-min"),
    ],
)
def test_long_gaps_between_events_are_capped(gap: float, credited_ms: int) -> None:
    agg = Aggregator(idle_seconds=7200)
    p = Player(agg)
    p(0.0, sta="s")
    p(1.0, sta="p")
    p(1.0 + gap, "t", sta="p")
    p(1.0 + gap, sta="e")
    assert day_total(agg, at=3 * 3600).playing_ms == credited_ms


def test_a_client_cannot_claim_more_playing_time_than_has_passed() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="s")
    p(0.0, sta="p")
    for i in range(1, 50):  # 49 events 5 min apart by their ts, all arriving within 1 s
        p(i / 50, "t", sta="p", ts_at=i * 300.0)
    # at most the arrival-time age (1 s) plus 5 min of slack
    assert day_total(agg).playing_ms <= 301_000


def test_a_replay_after_the_end_is_a_new_view_and_trailing_events_count_nothing() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(0.0, sta="s")
    p(0.5, sta="p")
    p(10.0, sta="e")
    p(15.0, "t", sta="e")
    p(16.0, "bc", sta="e", bitrate_kbps=900)
    cell = finish(agg)["day"]
    assert [c.views for c in cell.values()] == [1] * len(cell)
    agg2 = Aggregator()
    p2 = Player(agg2)
    for ev in p.sent:
        agg2.submit([ev])
    p2(20.0, sta="p")
    p2(30.0, sta="e")
    replayed = day_total(agg2)
    assert replayed.views == 2
    assert replayed.playing_ms == 9_500 + 10_000
    assert replayed.bitrate_changes == 0


# -- players that send no sta (Shaka's minified build) ----------------------------------------


def test_a_player_without_states_gets_its_view_and_startup_from_msd() -> None:
    agg = Aggregator()
    p = Player(agg, dims=Dimensions(player="shaka"))
    p(0.0, "t")
    p(0.1, "bc", bitrate_kbps=1296)
    p(0.2, "rr", bitrate_kbps=1296)
    p(1.2, "rr", bitrate_kbps=1296, startup_ms=207)
    for i in range(2, 12):
        p(1.2 + 2 * i, "rr", bitrate_kbps=1296)  # a segment every 2 s until 23.2
    p(25.0, "t")
    cell = day_total(agg)
    assert cell.views == 1
    assert startups(cell) == {bucket_of(207): 1}
    assert cell.playing_ms == round((25.0 - 1.2) * 1000)
    assert cell.exits_before_start == 0


def test_a_player_without_states_that_never_starts_is_an_exit_before_start() -> None:
    agg = Aggregator()
    p = Player(agg, dims=Dimensions(player="shaka"))
    p(0.0, "t")
    p(0.1, "bc", bitrate_kbps=1296)
    p(0.2, "rr", bitrate_kbps=1296)
    cell = day_total(agg)
    assert (cell.views, cell.exits_before_start, cell.playing_ms) == (1, 1, 0)
