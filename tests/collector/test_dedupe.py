"""Each event is counted once: re-sends (same sid, sn, ts) out of order, sn restarts, no sn."""

from __future__ import annotations

import itertools
import json
import random
import re
import tracemalloc
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from collector.dedupe import NO_SN_RING, WINDOW, Deduper
from tests.captures import CMCD_CAPTURES

FIXTURES = CMCD_CAPTURES
TS0 = 1_795_480_219_174

# A minimal reading of the fixture lines, independent of collector/cmcd.py.
_SID = re.compile(r'(?:^|,)sid="([^"]*)"')
_SN = re.compile(r"(?:^|,)sn=(\d+)")
_TS = re.compile(r"(?:^|,)ts=(\d+)")
_E = re.compile(r"(?:^|,)e=([a-z]+)")

Ev = tuple[int, int | None, int, str]  # (session, sn, ts, kind)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fixture_events(name: str) -> list[Ev]:
    """Every event line of every POST in a capture, in the order the player sent them."""
    sessions: dict[str, int] = {}
    events: list[Ev] = []
    for request in FIXTURES.joinpath(name).read_text().splitlines():
        r = json.loads(request)
        if r["method"] != "POST":
            continue
        for line in r["body"].splitlines():
            sid, sn, ts, e = _SID.search(line), _SN.search(line), _TS.search(line), _E.search(line)
            assert sid, line
            assert ts, line
            assert e, line
            session = sessions.setdefault(sid.group(1), len(sessions) + 1)
            events.append((session, int(sn.group(1)) if sn else None, int(ts.group(1)), e.group(1)))
    return events


def count(deduper: Deduper, events: Sequence[Ev]) -> list[Ev]:
    return [ev for ev in events if deduper.first_time(*ev)]


def test_hlsjs_429_retries_are_counted_once() -> None:
    events = fixture_events("hlsjs-status429.jsonl")
    assert len(events) == 34  # 13 distinct events, re-sent out of order by hls.js
    fresh = count(Deduper(clock=Clock()), events)
    assert len(fresh) == 13
    assert sorted(fresh) == sorted(set(events))


@pytest.mark.parametrize("seed", range(5), ids=lambda s: f"seed{s}")
def test_hlsjs_429_retries_shuffled_are_counted_once(seed: int) -> None:
    events = fixture_events("hlsjs-status429.jsonl")
    random.Random(seed).shuffle(events)
    assert sorted(count(Deduper(clock=Clock()), events)) == sorted(set(events))


@pytest.mark.parametrize(
    "name", sorted(p.name for p in FIXTURES.glob("*.jsonl")), ids=lambda n: n.removesuffix(".jsonl")
)
def test_every_capture_sent_three_times_shuffled_counts_each_event_once(name: str) -> None:
    events = fixture_events(name)
    deliveries = events * 3
    random.Random(name).shuffle(deliveries)
    fresh = count(Deduper(clock=Clock()), events + deliveries)
    assert sorted(fresh) == sorted(set(events))


def test_shaka_sn_restart_after_reconfigure_counts_the_new_epoch() -> None:
    deduper = Deduper(clock=Clock())
    first = [(1, sn, TS0 + 100 * sn, "rr") for sn in range(30)]
    second = [(1, sn, TS0 + 10_000 + 100 * sn, "rr") for sn in range(20)]
    assert len(count(deduper, first)) == 30
    assert len(count(deduper, second)) == 20
    # Late re-sends of both epochs, mixed: nothing is counted again.
    late = first + second
    random.Random(3).shuffle(late)
    assert count(deduper, late) == []


def test_sn_restart_detected_on_any_sn_the_old_epoch_had_seen() -> None:
    deduper = Deduper(clock=Clock())
    count(deduper, [(1, sn, TS0 + sn, "t") for sn in range(10)])
    restart = [(1, sn, TS0 + 5000 + sn, "t") for sn in (4, 0, 2, 1, 3)]  # out of order
    assert len(count(deduper, restart)) == 5
    assert count(deduper, restart) == []


def test_shaka_rr_timestamps_out_of_sn_order_are_not_taken_for_a_restart() -> None:
    # Shaka's rr ts is the request start: sn=4 may carry an older ts than sn=3.
    events = fixture_events("shaka-main.jsonl")
    assert any(b[2] < a[2] for a, b in itertools.pairwise(events))
    deduper = Deduper(clock=Clock())
    assert len(count(deduper, events)) == len(events)
    assert count(deduper, events) == []


def test_events_without_sn_are_keyed_by_kind_and_ts() -> None:
    events = fixture_events("hlsjs-customkeys.jsonl")
    assert all(sn is None for _, sn, _, _ in events)
    deduper = Deduper(clock=Clock())
    assert len(count(deduper, events)) == 7
    assert count(deduper, list(reversed(events))) == []
    # The same ts with another kind is another event.
    assert deduper.first_time(events[0][0], None, events[0][2], "ps") is True


def test_events_without_sn_older_than_the_ring_are_taken_for_re_sends() -> None:
    deduper = Deduper(clock=Clock())
    events = [(1, None, TS0 + 10 * i, "t") for i in range(NO_SN_RING * 3)]
    assert len(count(deduper, events)) == len(events)
    shuffled = events[:]
    random.Random(1).shuffle(shuffled)
    assert count(deduper, shuffled) == []
    # Documented cost: a first delivery older than every remembered one is dropped too.
    assert deduper.first_time(1, None, TS0 + 5, "t") is False


def test_a_session_mixing_events_with_and_without_sn_keeps_both() -> None:
    deduper = Deduper(clock=Clock())
    mixed = [
        (1, 0, TS0, "t"),
        (1, None, TS0 + 1, "ce"),
        (1, 1, TS0 + 2, "ps"),
        (1, None, TS0 + 3, "ce"),
    ]
    assert len(count(deduper, mixed)) == 4
    assert count(deduper, mixed[::-1]) == []


def test_out_of_order_within_the_window_counts_once() -> None:
    deduper = Deduper(clock=Clock())
    sns = list(range(WINDOW))
    random.Random(7).shuffle(sns)
    events = [(1, sn, TS0 + sn, "rr") for sn in sns]
    assert len(count(deduper, events)) == WINDOW
    assert count(deduper, events) == []


def test_a_jump_beyond_the_window_gives_up_on_older_gaps() -> None:
    deduper = Deduper(clock=Clock())
    assert deduper.first_time(1, 0, TS0, "t")
    assert deduper.first_time(1, 5000, TS0 + 5000, "t")
    assert deduper.first_time(1, 5000 - WINDOW + 1, TS0 + 4000, "t") is True  # inside
    assert deduper.first_time(1, 3, TS0 + 3, "t") is False  # below the window: assumed re-sent
    assert deduper.first_time(1, 0, TS0, "t") is False


@pytest.mark.parametrize(
    ("sn", "ts"),
    [(2**40, TS0), (-1, TS0), (0, -5), (0, 2**70)],
    ids=["huge-sn", "negative-sn", "negative-ts", "huge-ts"],
)
def test_absurd_values_are_handled_and_deduplicated(sn: int, ts: int) -> None:
    deduper = Deduper(clock=Clock())
    assert deduper.first_time(1, sn, ts, "t") is True
    assert deduper.first_time(1, sn, ts, "t") is False


def test_sessions_are_independent() -> None:
    deduper = Deduper(clock=Clock())
    assert deduper.first_time(1, 0, TS0, "t")
    assert deduper.first_time(2, 0, TS0, "t")
    assert not deduper.first_time(1, 0, TS0, "t")
    assert len(deduper) == 2


def test_forget_drops_a_session() -> None:
    deduper = Deduper(clock=Clock())
    deduper.first_time(1, 0, TS0, "t")
    deduper.first_time(2, 0, TS0, "t")
    deduper.forget(1)
    assert len(deduper) == 1
    assert deduper.first_time(1, 0, TS0, "t") is True


def test_an_active_session_is_kept_and_a_silent_one_forgotten() -> None:
    clock = Clock()
    deduper = Deduper(idle_seconds=1800, clock=clock)
    deduper.first_time(1, 0, TS0, "t")  # then silent
    for minute in range(1, 46):
        clock.now += 60
        deduper.first_time(2, minute, TS0 + minute * 60_000, "t")
    assert len(deduper) == 1  # session 1, silent for 45 minutes, is forgotten
    assert deduper.first_time(2, 1, TS0 + 60_000, "t") is False  # session 2 was kept
    assert deduper.first_time(1, 0, TS0, "t") is True


@pytest.mark.parametrize("silent", [1799.0, 1000.0, 10.0], ids=["just-under", "mid", "short"])
def test_a_session_silent_less_than_idle_is_remembered(silent: float) -> None:
    clock = Clock()
    deduper = Deduper(idle_seconds=1800, clock=clock)
    deduper.first_time(1, 0, TS0, "t")
    for step in range(100):  # other traffic drives the rotations
        clock.now += silent / 100
        deduper.first_time(2 + step, 0, TS0, "t")
    assert deduper.first_time(1, 0, TS0, "t") is False


def test_silent_sessions_are_gone_within_one_and_a_half_idle_periods() -> None:
    clock = Clock()
    deduper = Deduper(idle_seconds=100, clock=clock)
    for session in range(50):
        deduper.first_time(session, 0, TS0, "t")
    clock.now += 150
    deduper.first_time(999, 0, TS0, "t")
    assert len(deduper) == 1


def test_bounded_by_max_sessions_and_evictions_are_counted() -> None:
    before = REGISTRY.get_sample_value("streamtally_dedupe_evictions_total") or 0.0
    deduper = Deduper(max_sessions=100, clock=Clock())
    for session in range(250):
        deduper.first_time(session, 0, TS0, "t")
        assert len(deduper) <= 100
    after = REGISTRY.get_sample_value("streamtally_dedupe_evictions_total") or 0.0
    assert after - before == 150


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    jitter=st.lists(st.integers(-500, 500), min_size=300, max_size=300),
    copies=st.lists(st.integers(1, 3), min_size=300, max_size=300),
    seed=st.integers(0, 2**32),
    restart=st.integers(0, 300),
)
def test_property_any_delivery_order_counts_each_event_once(
    n: int, jitter: list[int], copies: list[int], seed: int, restart: int
) -> None:
    # Epoch 1: sn 0..n-1 with jittered ts; optionally epoch 2 (a restart, newer ts, fewer sns).
    first = [(1, sn, TS0 + 1000 * sn + jitter[sn], "rr") for sn in range(n)]
    later = TS0 + 1000 * (n + 2)
    second = [(1, sn, later + 1000 * sn + jitter[sn], "rr") for sn in range(min(restart, n))]
    rng = random.Random(seed)
    deliveries_1 = [ev for ev in first for _ in range(copies[ev[1]])]
    deliveries_2 = [ev for ev in second for _ in range(copies[ev[1]])]
    rng.shuffle(deliveries_1)
    rng.shuffle(deliveries_2)
    late = rng.sample(first, k=min(len(first), 10))  # epoch-1 re-sends arriving during epoch 2
    stream = deliveries_1 + late + deliveries_2 + late
    fresh = count(Deduper(clock=Clock()), stream)
    assert sorted(fresh) == sorted(set(first) | set(second))


def test_memory_and_speed_per_session() -> None:
    """Under 200 bytes per active session, about a microsecond per event (-s prints them)."""
    n = 20_000
    per_session = 10
    sessions = [random.getrandbits(60) for _ in range(n)]
    deduper = Deduper()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for sn in range(per_session):
        ts = TS0 + sn * 5000
        for session in sessions:
            deduper.first_time(session, sn, ts, "t")
    measured = (tracemalloc.get_traced_memory()[0] - base) / n + 32  # + the caller's int key
    tracemalloc.stop()
    estimate = deduper.memory_per_session()

    nosn = Deduper()
    for i in range(40):
        for session in sessions[:2000]:
            nosn.first_time(session, None, TS0 + i, "t")
    nosn_bytes = nosn.memory_per_session()
    print(
        f"dedupe: {measured:.0f} B/session measured, {estimate:.0f} B estimated, "
        f"{nosn_bytes:.0f} B without sn"
    )
    assert measured < 200
    assert estimate == pytest.approx(measured, rel=0.35)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 4),  # session
            st.one_of(st.none(), st.integers(-2, 40), st.just(2**32)),  # sn, some outside
            st.one_of(st.integers(-5, 60), st.just(2**44)),  # ts, some clamped
            st.sampled_from(["t", "ps", "rr", "xx"]),
        ),
        max_size=200,
    ),
    cut=st.integers(1, 50),
)
def test_property_a_batch_is_decided_as_one_event_at_a_time(events: list[Ev], cut: int) -> None:
    """The link's batch call (fresh) keeps exactly the events first_time would count, in
    order, whatever the mix of sns, no-sn events, restarts and out-of-range values."""
    from collector.handover import Dimensions, Event

    built = [
        Event("acct", s, 1, 0.0, "live", kind, Dimensions(), ts_ms=TS0 + ts if ts < 2**40 else ts,
              seq=sn)
        for s, sn, ts, kind in events
    ]  # fmt: skip
    one, batched = Deduper(clock=Clock()), Deduper(clock=Clock())
    expected = [ev for ev in built if one.first_time(ev.session, ev.seq, ev.ts_ms or 0, ev.kind)]
    got = []
    for i in range(0, len(built), cut):
        got += batched.fresh(built[i : i + cut])
    assert got == expected
    assert [id(ev) for ev in got] == [id(ev) for ev in expected]
