"""Windows: arrival-time minutes, roll-up into hours and days, concurrency, memory release."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aggregator.counting.cells import Group, RawCell
from aggregator.counting.histogram import startup_quantile
from aggregator.counting.windows import DEFAULT_BREAKDOWNS, Aggregator
from aggregator.release.ledger import Ledger
from collector.handover import Dimensions
from tests.aggregator.counting.test_sessions import ACCOUNT, DIMS, T0, Player, finish

DAY0 = datetime.fromtimestamp(T0, UTC)


def minute(n: int) -> datetime:
    return DAY0 + timedelta(minutes=n)


def watch(agg: Aggregator, session: int, viewer: int, start: float, end: float, **kw: Any) -> None:
    """A plain view: starts at ``start``, plays with a t event every 10 s, ends at ``end``."""
    p = Player(agg, session=session, viewer=viewer, **kw)
    p(start, sta="s")
    p(start + 0.5, sta="p", bitrate_kbps=2000)
    t = start + 10
    while t < end:
        p(t, "t", sta="p", bitrate_kbps=2000)
        t += 10
    p(end, sta="e", bitrate_kbps=2000)


def test_two_sessions_of_one_viewer_are_two_views_and_one_unique_viewer() -> None:
    agg = Aggregator()
    watch(agg, session=1, viewer=7, start=0, end=20)
    watch(agg, session=2, viewer=7, start=30, end=50)
    cell = finish(agg)["day"][(DAY0, "s1", "", "")]
    assert (cell.views, len(cell.viewers)) == (2, 1)


def test_every_breakdown_gets_a_cell_per_value() -> None:
    agg = Aggregator()
    watch(agg, 1, 1, 0, 20, dims=DIMS)
    watch(agg, 2, 2, 0, 20, dims=Dimensions(country="FR", device="mobile", os="Android"))
    day = finish(agg)["day"]
    keys = {(b, v) for (_, s, b, v) in day}
    assert {b for b, _ in keys} == set(DEFAULT_BREAKDOWNS)
    assert {("country", "DE"), ("country", "FR"), ("device", "mobile"), ("", "")} <= keys
    assert day[(DAY0, "s1", "country", "FR")].views == 1
    assert day[(DAY0, "s1", "", "")].views == 2


def test_breakdowns_are_configurable_and_the_stream_total_always_kept() -> None:
    agg = Aggregator(breakdowns=("country",))
    watch(agg, 1, 1, 0, 20)
    assert {(b, v) for (_, _s, b, v) in finish(agg)["day"]} == {("", ""), ("country", "DE")}


def test_unknown_breakdown_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown breakdown"):
        Aggregator(breakdowns=("", "city"))


def test_contributions_go_to_the_arrival_minute_of_the_later_event() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(40.0, sta="s")
    p(50.0, sta="p")
    p(58.0, "t", sta="p")  # 8 s in minute 0
    p(66.0, "t", sta="p")  # 8 s in minute 1
    p(70.0, sta="e")  # 4 s in minute 1
    cells = finish(agg)["minute"]
    assert cells[(minute(0), "s1", "", "")].playing_ms == 8_000
    assert cells[(minute(1), "s1", "", "")].playing_ms == 12_000
    assert cells[(minute(0), "s1", "", "")].views == 1
    assert cells[(minute(1), "s1", "", "")].views == 0
    assert len(cells[(minute(1), "s1", "", "")].viewers) == 1  # still watching there


@pytest.mark.parametrize(
    "skew_ms",
    [
        pytest.param(0, id="right-clock"),
        pytest.param(3 * 86_400_000, id="clock-3-days-ahead"),
        pytest.param(-400 * 86_400_000, id="clock-400-days-behind"),
    ],
)
def test_a_wrong_client_clock_shifts_nothing(skew_ms: int) -> None:
    agg = Aggregator()
    p = Player(agg, skew_ms=skew_ms)
    p(10.0, sta="s")
    p(10.5, sta="p")
    p(70.0, "t", sta="p")
    p(90.0, sta="e")
    cells = finish(agg)
    assert set(cells["minute"]) >= {(minute(0), "s1", "", ""), (minute(1), "s1", "", "")}
    assert {ws for ws, *_ in cells["day"]} == {DAY0}
    assert cells["day"][(DAY0, "s1", "", "")].playing_ms == 79_500
    assert cells["minute"][(minute(1), "s1", "", "")].playing_ms == 79_500  # 10.5 -> 90 s


def test_an_event_arriving_after_its_minute_closed_counts_in_the_next_open_minute() -> None:
    agg = Aggregator()
    p = Player(agg)
    p(10.0, sta="s")
    agg.tick(T0 + 125)  # minutes 0 and 1 close
    late = p.event(30.0, sta="p")  # stamped in minute 0, handed over late
    agg.submit([late])
    p(150.0, sta="e")
    cells = finish(agg)["minute"]
    assert cells[(minute(0), "s1", "", "")].views == 1
    assert cells[(minute(2), "s1", "", "")].exits_before_start == 0
    assert cells[(minute(2), "s1", "", "")].playing_ms == 120_000


def test_concurrent_peak_is_distinct_sessions_playing_in_a_minute_and_the_max_above() -> None:
    agg = Aggregator()
    for s in range(3):  # three sessions play in minute 0, one goes on into minute 1
        watch(agg, session=s, viewer=s, start=5, end=50 if s else 100)
    cells = finish(agg)
    assert cells["minute"][(minute(0), "s1", "", "")].concurrent_peak == 3
    assert cells["minute"][(minute(1), "s1", "", "")].concurrent_peak == 1
    assert cells["hour"][(DAY0, "s1", "", "")].concurrent_peak == 3
    assert cells["day"][(DAY0, "s1", "", "")].concurrent_peak == 3


ADDITIVE = (
    "views",
    "playing_ms",
    "rebuffer_count",
    "rebuffer_ms",
    "failures",
    "exits_before_start",
    "bitrate_kbps_ms",
    "bitrate_ms",
    "bitrate_changes",
    "latency_ms_sum",
    "latency_count",
)


def _sum(cells: list[RawCell]) -> dict[str, object]:
    out: dict[str, object] = {f: sum(getattr(c, f) for c in cells) for f in ADDITIVE}
    out["viewers"] = set().union(*(c.viewers for c in cells))
    out["startup_hist"] = [sum(h) for h in zip(*(c.startup_hist for c in cells), strict=True)]
    out["concurrent_peak"] = max(c.concurrent_peak for c in cells)
    codes: dict[str, int] = {}
    for c in cells:
        for code, n in c.failures_by_code.items():
            codes[code] = codes.get(code, 0) + n
    out["failures_by_code"] = codes
    return out


def _fields(cell: RawCell) -> dict[str, object]:
    return _sum([cell])


def test_minutes_roll_up_into_hours_and_days_equal_to_direct_sums() -> None:
    agg = Aggregator()
    countries = ("DE", "FR", "IT")
    for s in range(12):  # sessions spread over two hours, a stall and a failure here and there
        p = Player(agg, session=s, viewer=s % 5, dims=Dimensions(country=countries[s % 3]))
        start = s * 600.0 + 7
        p(start, sta="s")
        if s % 4 == 3:
            p(start + 1, "e", sta="f", error_code=f"code{s % 2}")
            continue
        p(start + 1, sta="p", bitrate_kbps=1000 + 100 * s, latency_ms=2000 + s)
        for t in range(1, 9):
            p(start + 1 + 30 * t, "t", sta="r" if t == 4 and s % 2 else "p", bitrate_kbps=1500)
        p(start + 300, sta="e")
    cells = finish(agg, at=4 * 3600)
    for (hour_start, stream, b, v), hour_cell in cells["hour"].items():
        minutes = [
            c
            for (ws, s2, b2, v2), c in cells["minute"].items()
            if (s2, b2, v2) == (stream, b, v) and hour_start <= ws < hour_start + timedelta(hours=1)
        ]
        assert _fields(hour_cell) == _sum(minutes)
    for (_day, stream, b, v), day_cell in cells["day"].items():
        hours = [
            c for (_, s2, b2, v2), c in cells["hour"].items() if (s2, b2, v2) == (stream, b, v)
        ]
        assert _fields(day_cell) == _sum(hours)
    day = cells["day"][(DAY0, "s1", "", "")]
    assert (day.views, len(day.viewers), day.failures) == (12, 5, 3)
    assert day.rebuffer_count == 3  # sessions 1, 5 and 9 stall


def test_idle_sessions_end_and_leave_memory_while_active_ones_stay() -> None:
    agg = Aggregator(idle_seconds=600)
    quiet = Player(agg, session=1, viewer=1)
    busy = Player(agg, session=2, viewer=2)
    quiet(0.0, sta="s")
    quiet(1.0, sta="p")
    busy(0.0, sta="s")
    busy(1.0, sta="p")
    for t in range(60, 1300, 60):
        busy(float(t), "t", sta="p")
        agg.tick(T0 + t)
    assert agg.stats()["active_sessions"] == 1
    busy(1300.0, sta="e")
    agg.tick(T0 + 1300 + 601)
    assert agg.stats()["active_sessions"] == 0


def _flush(agg: Aggregator, ledger: Ledger, now: float) -> list[Group]:
    agg.tick(now)
    for raw in agg.take_closed():
        ledger.add_minute(raw)
    ledger.advance(agg.open_minute * 60)
    return ledger.groups()


def test_groups_hand_out_closed_minutes_once_and_mark_final_windows() -> None:
    agg = Aggregator()
    ledger = Ledger(lambda _a: 2)
    watch(agg, 1, 1, 5, 50)
    watch(agg, 2, 2, 5, 50)
    assert _flush(agg, ledger, T0 + 61) == []  # minute 0 not closed before its grace period
    first = _flush(agg, ledger, T0 + 63)
    assert [(g.granularity, g.closed) for g in first] == [
        ("minute", True),
        ("hour", False),
        ("day", False),
    ]
    ledger.written(first)  # the closed minute goes; open hours and days stay
    assert _flush(agg, ledger, T0 + 64) == []  # nothing changed since
    assert [g.granularity for g in ledger.groups(changed_only=False)] == ["hour", "day"]
    closed = _flush(agg, ledger, T0 + 3600 + 3)
    assert [(g.granularity, g.closed) for g in closed] == [("hour", True)]


def test_a_day_releases_its_cells_and_viewer_keys_after_its_final_write() -> None:
    agg = Aggregator(idle_seconds=300)
    ledger = Ledger(lambda _a: 2)
    for s in range(20):
        watch(agg, session=s, viewer=s, start=86_400 - 200 + s, end=86_400 - 100)
    watch(agg, session=99, viewer=99, start=86_400 + 10, end=86_400 + 30)  # the next day
    watch(agg, session=98, viewer=98, start=86_400 + 10, end=86_400 + 30)
    groups = _flush(agg, ledger, T0 + 86_400 + 3)
    assert ledger.stats()["viewer_keys"] > 0
    assert ("day", True, DAY0) in {(g.granularity, g.closed, g.window_start) for g in groups}
    ledger.written(groups)
    assert ledger.stats()["viewer_keys"] == 0
    assert ledger.stats()["groups"] == 0
    agg.end_all(T0 + 86_400 + 100)
    left = _flush(agg, ledger, T0 + 86_400 + 100)
    assert {g.window_start.date() for g in left} == {(DAY0 + timedelta(days=1)).date()}


def test_forget_account_removes_its_sessions_and_cells_and_keeps_the_others() -> None:
    agg = Aggregator()
    watch(agg, 1, 1, 0, 100)
    watch(agg, 2, 2, 0, 100, account="acc-2")
    Player(agg, session=3, viewer=3)(150.0, sta="s")  # open session, open minute
    Player(agg, session=4, viewer=4, account="acc-2")(150.0, sta="s")
    agg.tick(T0 + 125)
    agg.forget_account(ACCOUNT)
    assert agg.stats()["active_sessions"] == 3 - 1 - 0  # sessions 2 (ended) and 4 stay
    cells = finish(agg)
    assert cells["day"]
    for gran in ("minute", "hour", "day"):
        assert all(c.viewers <= {2, 4} for c in cells[gran].values())
    ledger = Ledger(lambda _a: 2)
    watch(agg, 5, 5, 7300, 7310, account="acc-2")
    watch(agg, 6, 6, 7300, 7310)
    ledger.forget_account(ACCOUNT)
    _flush(agg, ledger, T0 + 7400)
    ledger.forget_account(ACCOUNT)
    accounts = {g.account_id for g in ledger.groups(changed_only=False)}
    assert accounts <= {"acc-2"}


def test_new_sessions_are_refused_beyond_max_sessions() -> None:
    agg = Aggregator(max_sessions=2)
    for s in range(3):
        Player(agg, session=s, viewer=s)(0.0, sta="s")
    assert not agg.accepting()
    assert agg.stats()["refused_events"] == 1
    assert finish(agg)["day"][(DAY0, "s1", "", "")].views == 2


def test_a_session_ending_by_silence_adds_nothing_to_the_minute_it_is_found_in() -> None:
    agg = Aggregator(idle_seconds=600)
    watch(agg, 1, 1, 0, 50)  # ended by its player
    p = Player(agg, session=2, viewer=2)
    p(0.0, sta="s")
    p(1.0, sta="p")
    p(3.0, "t", sta="p")  # then the tab is closed: silence, before any msd could come
    agg.tick(T0 + 50 + 601)
    assert agg.stats()["active_sessions"] == 0
    cells = finish(agg)
    assert {ws for (ws, *_rest) in cells["minute"]} == {minute(0)}


@pytest.mark.parametrize(
    "startups_ms",
    [
        pytest.param([300] * 50 + [2000] * 45 + [9000] * 5, id="mostly-fast"),
        pytest.param(list(range(100, 10_100, 100)), id="spread-100ms-to-10s"),
    ],
)
def test_startup_p50_and_p95_come_from_the_cells_histogram_within_a_bucket(
    startups_ms: list[int],
) -> None:
    agg = Aggregator()
    for s, ms in enumerate(startups_ms):
        p = Player(agg, session=s, viewer=s)
        p(1.0, sta="s")
        p(1.0 + ms / 1000, sta="p")
        p(20.0, sta="e")
    hist = finish(agg)["day"][(DAY0, "s1", "", "")].startup_hist
    ordered = sorted(startups_ms)
    for q in (0.5, 0.95):
        true = ordered[int(q * len(ordered)) - 1]
        assert abs(startup_quantile(hist, q) - true) <= 0.21 * true


def test_a_minute_closed_in_slices_loses_nothing_that_arrives_in_between() -> None:
    agg = Aggregator()
    countries = [f"C{i}" for i in range(40)]  # 40 leaves: 4 slices of 10
    for i, country in enumerate(countries):
        p = Player(agg, session=i + 1, viewer=i + 1, dims=Dimensions(country=country))
        p(10, sta="p")
    steps = agg.tick_steps(T0 + 62, slice_leaves=10)
    next(steps)  # the first slice of minute 0 is closed; the loop would now serve requests
    late = Player(agg, session=99, viewer=99, dims=Dimensions(country="C0"))
    late(59, sta="p")  # a minute-0 arrival that races the close: counts in minute 1
    for _ in steps:
        pass
    cells = finish(agg)
    assert cells["minute"][(minute(0), "s1", "", "")].views == 40
    assert cells["minute"][(minute(1), "s1", "", "")].views == 1
    assert cells["hour"][(DAY0, "s1", "", "")].views == 41
    assert len(cells["hour"][(DAY0, "s1", "", "")].viewers) == 41
