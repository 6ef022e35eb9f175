"""Events per report in the benchmark: the traffic batches a session's consecutive events
into one report, the correctness check counts events (not reports) per phase, and the
report turns events per CPU-second into viewers per core at a heartbeat."""

from __future__ import annotations

import re
from array import array
from collections import Counter
from typing import Any

import pytest

from benchmarks import loadgen, report, runner, traffic, wrk

START_MS = 1_795_480_000_000


def take(batch: int, reports: int = 3000) -> list[traffic.Request]:
    flow = traffic.Traffic(
        traffic.load_templates(), concurrent=40, seed=7, start_ms=START_MS, batch=batch
    )
    return flow.take(reports)


def lines_of(r: traffic.Request) -> list[str]:
    return r.body.decode().splitlines()


@pytest.mark.parametrize("batch", [1, 4, 30], ids=["1-event", "4-events", "30-events"])
def test_a_report_carries_batch_consecutive_events_of_one_session(batch: int) -> None:
    requests = take(batch)
    sizes = Counter(r.events for r in requests)
    assert max(sizes) == batch
    assert sizes[batch] > 0.5 * len(requests)  # fewer only at a session's end
    for r in requests:
        lines = lines_of(r)
        assert len(lines) == r.events
        assert len({re.search(r'sid="([^"]+)"', line)[1] for line in lines}) == 1  # type: ignore[index]
        sns = [int(re.search(r"(?:^|,)sn=(\d+)", line)[1]) for line in lines]  # type: ignore[index]
        assert sns == list(range(sns[0], sns[0] + len(sns)))


def test_batched_sessions_send_the_same_events_as_unbatched_ones() -> None:
    """Whole sessions: batching changes how events are packed, never which are sent."""
    templates = traffic.load_templates()
    one, views_one = traffic.complete_sessions(templates, 30, seed=3, start_ms=START_MS)
    many, views_many = traffic.complete_sessions(templates, 30, seed=3, start_ms=START_MS, batch=5)
    assert sorted(line for r in one for line in lines_of(r)) == sorted(
        line for r in many for line in lines_of(r)
    )
    assert views_one == views_many > 0
    assert sum(r.events for r in many) == len(one) > len(many)


def test_batch_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="batch"):
        traffic.Traffic(traffic.load_templates(), concurrent=1, seed=1, start_ms=0, batch=0)


# ---- the correctness check counts events ---------------------------------------------------


def counters(accepted: float) -> dict[str, float]:
    return {"accepted": accepted, "dropped": 0.0, "rejected": 0.0}


def open_loop(sent: int, answered: int) -> loadgen.RunResult:
    return loadgen.RunResult(
        offered_rate=100.0,
        duration=1.0,
        sent=sent,
        answered=answered,
        statuses=Counter({204: answered}),
        latencies=array("d"),
        errors=0,
        generator_cpu=0.0,
    )


EVENTS = [4, 4, 4, 2, 4, 4, 1, 4]  # events per request of a pool, in the order sent


@pytest.mark.parametrize(
    ("counted", "ok"),
    [(22, True), (21, False), (6, False)],
    ids=["every-event", "one-event-short", "counted-as-reports"],
)
def test_open_loop_phases_compare_events_sent_with_events_counted(counted: int, ok: bool) -> None:
    phase = runner._phase_count(
        "p", "loadgen", open_loop(6, 6), counters(0), counters(counted), EVENTS
    )
    assert phase.events_sent == 4 + 4 + 4 + 2 + 4 + 4  # the first six requests'
    assert phase.ok is ok


def test_an_open_loop_phase_with_unanswered_requests_is_not_ok() -> None:
    phase = runner._phase_count("p", "loadgen", open_loop(6, 5), counters(0), counters(18), EVENTS)
    assert not phase.ok


def wrk_result(requests: int, generated: int) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests=requests,
        duration=1.0,
        non_2xx=0,
        socket_errors=0,
        generated=generated,
        wrapped=generated > len(EVENTS),
    )


@pytest.mark.parametrize(
    ("counted", "ok"),
    [(15, True), (19, True), (23, True), (14, False), (24, False)],
    ids=["in-flight-lost", "some-in-flight", "all-counted", "below", "above"],
)
def test_wrk_phases_bound_the_events_of_requests_in_flight(counted: int, ok: bool) -> None:
    """wrk stopped with 2 of 7 requests handed out unanswered: the counted events lie
    between all of the 7's events and that less two of the largest reports."""
    phase = runner._phase_count(
        "p", "wrk", wrk_result(5, 7), counters(0), counters(counted), EVENTS
    )
    assert phase.sent_upper_bound == 23
    assert phase.events_sent == 23 - 2 * 4
    assert phase.ok is ok


def test_a_pool_handed_out_more_than_once_counts_each_round() -> None:
    assert runner._prefix_events(EVENTS, 2 * len(EVENTS) + 3) == 2 * sum(EVENTS) + 12
    assert runner._prefix_events(None, 11) == 11


# ---- events/s and viewers per core ---------------------------------------------------------


def saturation(rps: float, cpu_ms_per_1000: float) -> runner.Saturation:
    return runner.Saturation(
        tool="wrk",
        rps=rps,
        requests=int(rps * 8),
        non_2xx=0,
        socket_errors=0,
        server_cpu_seconds=8.0,
        cpu_seconds_per_1000=cpu_ms_per_1000 / 1000,
        server_busy=1.0,
        wrapped=False,
    )


def test_viewers_per_core_are_events_per_cpu_second_times_the_heartbeat() -> None:
    run = runner.BatchRun(batch=4, events_per_report=3.9, saturation=saturation(5000.0, 200.0))
    assert run.events_rps == pytest.approx(19_500.0)
    assert run.events_per_cpu_second == pytest.approx(5000.0 * 3.9)  # 0.2 ms per report
    assert run.viewers_per_core(10) == pytest.approx(195_000.0)
    assert run.viewers_per_core(30) == pytest.approx(585_000.0)
    summary = run.summary()
    assert summary["viewers_per_core"] == {"10": 195_000, "30": 585_000}


def test_the_report_has_events_per_report_next_to_reports() -> None:
    runs = [
        runner.BatchRun(1, 1.0, saturation(6000.0, 160.0)),
        runner.BatchRun(4, 3.9, saturation(5000.0, 200.0)),
    ]
    target: dict[str, Any] = {
        "name": runner.ST_SEALED,
        "label": runner.LABELS[runner.ST_SEALED],
        "saturation": {**vars(runs[0].saturation)},
        "points": [],
        "batches": [r.summary() for r in runs],
    }
    result: dict[str, Any] = {
        "machine": {"cpus": 2, "cpu_model": "x", "python": "3.11", "load_average": [0, 0, 0]},
        "plan": vars(runner.QUICK),
        "started": "2026-12-06T13:00:00",
        "server_cpu": 1,
        "generator_cpu": 0,
        "heartbeats_s": [10, 30],
        "targets": {runner.ST_SEALED: target},
    }
    text = report.markdown(result, None)
    assert "## Events per report, events/s and viewers per core" in text
    assert (
        "| streamtally-sealed | 1.00 (1) | 6,000 | 6,000 | 160.0 | 6,250 | 62,500 | 187,500 |"
        in text
    )
    assert (
        "| streamtally-sealed | 3.90 (4) | 5,000 | 19,500 | 200.0 | 19,500 | 195,000 | 585,000 |"
        in text
    )
