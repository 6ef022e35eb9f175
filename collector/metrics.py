"""The collector's Prometheus metrics. Labels come only from small fixed sets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from time import perf_counter

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector


class LoopCounter(Collector):
    """A counter without labels for the report path, added to by the event loop's thread
    only: ``inc`` is an attribute add (a ``prometheus_client.Counter`` takes a lock and
    checks its arguments, ten times the cost, twice per report). Exposed as the same
    counter family, with its ``_created`` sample."""

    def __init__(
        self, name: str, documentation: str, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.value = 0
        self.created = time.time()
        registry.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation)
        family.add_metric([], self.value, created=self.created)
        yield family


REPORTS_ACCEPTED = LoopCounter(
    "streamtally_reports_accepted_total", "Reports answered 204 (or 400 with good lines kept)"
)
REPORTS_REJECTED = Counter(
    "streamtally_reports_rejected_total",
    "Reports refused, by reason",
    ["reason"],
)
EVENTS_ACCEPTED = LoopCounter(
    "streamtally_events_accepted_total", "Events handed to the aggregator"
)
EVENTS_DROPPED = Counter(
    "streamtally_events_dropped_total",
    "Events not counted, by reason (bot, duplicate, invalid, late)",
    ["reason"],
)
VALUES_SCREENED = Counter(
    "streamtally_values_screened_total",
    "Client values not kept as sent, by field (stream, error_code, event_type, player_state, "
    "player) and reason (email, ip, url, digits, uuid, length, unlisted)",
    ["field", "reason"],
)

STEPS = ("receive", "admit", "open", "parse", "limit", "dedupe", "strip", "key", "handover")


class StepTimes(Collector):
    """Time and count per pipeline step, in two lists indexed like ``STEPS``: the pipeline
    adds to them in place (no call per step), and this exposes them as the summary
    ``streamtally_pipeline_step_seconds{step}`` (``_count``, ``_sum``)."""

    def __init__(self) -> None:
        self.counts = [0] * len(STEPS)
        self.totals = [0.0] * len(STEPS)

    @property
    def count(self) -> dict[str, int]:
        return dict(zip(STEPS, self.counts, strict=True))

    @property
    def total(self) -> dict[str, float]:
        return dict(zip(STEPS, self.totals, strict=True))

    def add(self, step: str, started: float) -> float:
        now = perf_counter()
        i = STEPS.index(step)
        self.counts[i] += 1
        self.totals[i] += now - started
        return now

    def collect(self) -> Iterator[Metric]:
        family = SummaryMetricFamily(
            "streamtally_pipeline_step_seconds",
            "Time spent in each step of the report pipeline",
            labels=["step"],
        )
        for step, count, total in zip(STEPS, self.counts, self.totals, strict=True):
            family.add_metric([step], count, total)
        yield family


STEP_TIMES = StepTimes()
REGISTRY.register(STEP_TIMES)
