"""The report path's cheap counters are exposed exactly as prometheus_client's Counter."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.metrics import EVENTS_ACCEPTED, REPORTS_ACCEPTED, LoopCounter


def _families(text: bytes) -> list[tuple[str, str, str, list[tuple[str, float]]]]:
    return [
        (f.name, f.type, f.documentation, [(s.name, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text.decode())
    ]


@pytest.mark.parametrize(
    "amounts", [pytest.param([], id="none"), pytest.param([1, 3, 1], id="some")]
)
def test_a_loop_counter_is_exposed_like_a_counter(amounts: list[int]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    counter = LoopCounter("streamtally_things_total", "Things", registry=ours)
    reference = Counter("streamtally_things_total", "Things", registry=theirs)
    counter.created = reference._created  # the one sample that differs by construction
    for amount in amounts:
        counter.inc(amount)
        reference.inc(amount)
    assert _families(generate_latest(ours)) == _families(generate_latest(theirs))


def test_the_report_counters_are_loop_counters() -> None:
    assert isinstance(REPORTS_ACCEPTED, LoopCounter)
    assert isinstance(EVENTS_ACCEPTED, LoopCounter)
