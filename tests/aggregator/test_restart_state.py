"""The hot restart's state: counting that goes through to_state → marshal → from_state in the
middle gives exactly what counting straight through gives; a cold restart's first mid-play
event resumes a session instead of starting a view."""

from __future__ import annotations

import marshal

import pytest

from aggregator.counting.windows import Aggregator
from aggregator.release.kanon import MIN_K
from aggregator.release.ledger import Ledger
from aggregator.restart_state import StateError, from_state, to_state
from collector.dedupe import Deduper
from collector.handover import Dimensions, Event
from collector.replay import ReplayGuard
from collector.viewer import ViewerKeys

T0 = 1_795_480_000.0  # a minute start


def ev(i: int, sn: int, at: float, sta: str | None, kind: str = "ps", **kw: object) -> Event:
    dims = Dimensions(country=("DE", "FR")[i % 2], device=("desktop", "mobile")[i % 2])
    return Event(
        account_id="acc", session=1000 + i, viewer=(7 << 40) + i % 9, arrival=at,
        stream=("s1", "s2")[i % 3 == 0], kind=kind, dims=dims, ts_ms=int(at * 1000),
        seq=sn, state=sta, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def traffic(first: bool) -> list[Event]:
    """Two halves of the same 30 playbacks: starts, msd, rebuffers, failures, exits."""
    out: list[Event] = []
    for i in range(30):
        base = T0 + i * 0.5
        if first:
            out += [ev(i, 0, base, "s"), ev(i, 1, base + 1.2 + i % 4, "p", startup_ms=900 + i)]
            if i % 7 == 0:
                out.append(ev(i, 2, base + 20, "f", error_code="E42"))
            elif i % 5 == 0:
                out.append(ev(i, 2, base + 30, "r"))
        else:
            t = T0 + 90 + i
            if i % 7 == 0:
                continue
            out += [ev(i, 3, t, "p", "t"), ev(i, 4, t + 70, "e" if i % 3 else "a")]
    return out


def run(handover: bool) -> list[tuple[object, ...]]:
    agg = Aggregator(idle_seconds=600)
    ledger = Ledger(lambda _: MIN_K)
    for e in traffic(True):
        agg.submit([e])
    agg.tick(T0 + 75)  # the first minute closes; the second is open
    for raw in agg.take_closed()[:1]:
        ledger.add_minute(raw)
    if handover:
        replay = ReplayGuard(60, 10)
        packed = to_state(
            aggregator=agg, ledger=ledger, service={}, deduper=Deduper(), replay=replay
        )
        state = marshal.loads(marshal.dumps(packed))
        agg, ledger = Aggregator(idle_seconds=600), Ledger(lambda _: MIN_K)
        from_state(state, aggregator=agg, ledger=ledger, deduper=Deduper(),
                   replay=ReplayGuard(60, 10))  # fmt: skip
    for e in traffic(False):
        agg.submit([e])
    agg.end_all(T0 + 4000)
    for raw in agg.take_closed():
        ledger.add_minute(raw)
    ledger.advance(T0 + 200_000)
    return [
        (g.granularity, g.window_start, key, row.views, len(row.viewers), row.playing_ms,
         row.exits_before_start, row.failures, tuple(row.startup_hist), row.concurrent_peak,
         tuple(sorted(row.codes.items())), row.rebuffer_count)
        for g in ledger.groups(changed_only=False)
        for key, row in sorted(g.rows.items())
    ]  # fmt: skip


def test_counting_through_a_hand_over_is_counting_straight_through() -> None:
    straight = run(handover=False)
    assert straight
    assert run(handover=True) == straight


def test_a_state_of_other_fields_is_refused() -> None:
    state = to_state(aggregator=Aggregator(), ledger=Ledger(lambda _: MIN_K), service={},
                     deduper=Deduper(), replay=ReplayGuard(60, 10))  # fmt: skip
    state["shapes"]["session"] = ("handle", "something_new")
    with pytest.raises(StateError):
        from_state(state, aggregator=Aggregator(), ledger=Ledger(lambda _: MIN_K),
                   deduper=Deduper(), replay=ReplayGuard(60, 10))  # fmt: skip


def test_viewer_keys_taken_over_give_the_same_keys_and_handles() -> None:
    old = ViewerKeys(clock=lambda: T0)
    key = old.key("acc", "203.0.113.9", "UA", T0)
    handle = old.session_handle("acc", "sid-1")
    process, days = old.handover_secrets()
    new = ViewerKeys(clock=lambda: T0)
    new.take_over(bytearray(process), {d: bytearray(s) for d, s in days.items()})
    assert new.key("acc", "203.0.113.9", "UA", T0) == key
    assert new.session_handle("acc", "sid-1") == handle


@pytest.mark.parametrize(
    ("first", "resumed"),
    [
        pytest.param(ev(1, 40, T0 + 1, "p", "t"), True, id="heartbeat-playing"),
        pytest.param(ev(1, 9, T0 + 1, "a"), True, id="paused"),
        pytest.param(ev(1, 0, T0 + 1, "p"), False, id="sn0-is-a-start"),
        pytest.param(ev(1, 2, T0 + 1, "s"), False, id="starting"),
        pytest.param(ev(1, 1, T0 + 1, "r"), False, id="shaka-debug-first-rebuffer"),
        pytest.param(ev(1, 30, T0 + 1, None, "t"), True, id="stateless-late-sn"),
        pytest.param(ev(1, 2, T0 + 1, None, "bc", startup_ms=300), False, id="stateless-msd"),
    ],
)
def test_after_a_cold_start_a_mid_play_first_event_resumes_without_a_view(
    first: Event, resumed: bool
) -> None:
    agg = Aggregator()
    agg.resume_until = T0 + 1800
    agg.resumed_from = T0
    agg.submit([first])
    agg.end_all(T0 + 2)
    [group] = agg.take_closed()
    total = group.cells[(first.stream, "", "")]
    assert (total.views == 0) is resumed
    assert total.exits_before_start == 0 or not resumed
    assert not total.startups or not resumed


def playing_ms(groups: list[object]) -> int:
    return sum(
        cell.playing_ms
        for g in groups
        for key, cell in g.cells.items()  # type: ignore[attr-defined]
        if key == ("s1", "", "")
    )


@pytest.mark.parametrize(
    ("after", "played_s"),
    [
        pytest.param(ev(2, 5, T0 + 30, "p", "t"), 31, id="heartbeat-playing"),  # + to the stop
        pytest.param(ev(2, 5, T0 + 30, "a"), 30, id="paused-played-until-the-pause"),
        pytest.param(ev(2, 5, T0 + 30, "k"), 30, id="seek-played-until-the-seek"),
    ],
)
def test_playing_time_across_a_cold_restart_is_playing_time_straight_through(
    after: Event, played_s: int
) -> None:
    """A playback playing when the process stops, whose first event to the next process is a
    heartbeat or a pause or seek (``ps a``/``ps k``: it played up to that event): the two
    runs together credit what one run credits, by the arrival clock across the gap."""
    playing = ev(2, 3, T0, "p", "t")
    straight = Aggregator()
    straight.submit([playing, after])
    straight.end_all(T0 + 31)
    assert playing_ms(straight.take_closed()) == played_s * 1000

    before = Aggregator()
    before.submit([playing])
    before.end_all(T0 + 10)  # SIGTERM: the old run credits up to its stop
    restarted = Aggregator()
    restarted.resume_until = T0 + 1800
    restarted.resumed_from = T0 + 10  # the stop mark
    restarted.submit([after])
    restarted.end_all(T0 + 31)
    assert playing_ms(before.take_closed()) + playing_ms(restarted.take_closed()) == (
        played_s * 1000
    )
