"""What the operator listener shows: every metric family classified, none with a label
about a client, gauges of in-memory state coarse enough that one viewer cannot be seen."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import aggregator.app
import aggregator.cluster.link_server  # noqa: F401  (and the cluster link's, both ends)
import collector.link  # noqa: F401
from aggregator.opmetrics import (
    ALLOWED_LABELS,
    COARSE_FLOOR,
    COARSE_RULE,
    EXPOSURE,
    coarse,
    operator_registry,
)


def test_every_family_of_the_registry_is_classified() -> None:
    """A metric added later is not shown until someone decides how (fail closed)."""
    unclassified = sorted({f.name for f in REGISTRY.collect()} - set(EXPOSURE))
    assert unclassified == []


def test_no_exposed_sample_carries_a_label_outside_the_fixed_sets() -> None:
    text = generate_latest(operator_registry()).decode()
    labels = {k for f in text_string_to_metric_families(text) for s in f.samples for k in s.labels}
    assert labels <= ALLOWED_LABELS
    assert "_created" not in text


def test_withheld_families_are_not_shown_and_coarse_ones_say_so() -> None:
    text = generate_latest(operator_registry()).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, exposure in EXPOSURE.items():
        if exposure.kind == "withheld":
            assert name not in families, name
        elif exposure.kind == "coarse":
            assert COARSE_RULE in families[name].documentation, name


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (0, 0),
        (1, 0),
        (COARSE_FLOOR - 1, 0),
        (COARSE_FLOOR, 100),
        (109, 100),
        (110, 110),
        (999, 990),
        (1_000, 1_000),
        (1_099, 1_000),
        (12_345, 12_000),
        (1_999_999, 1_900_000),
    ],
    ids=lambda v: str(v),
)
def test_coarse_rule(raw: int, shown: int) -> None:
    assert coarse(raw) == shown


def test_one_more_viewer_moves_a_coarse_gauge_only_at_a_step_and_then_by_a_whole_step() -> None:
    """The attack on a coarse gauge: add one, look for a change. Below the floor nothing ever
    moves; above it a change needs a step boundary, and is then as large as a step (at least
    10), so the reader cannot tell one viewer from ten."""
    moves = [(n, coarse(n + 1) - coarse(n)) for n in range(0, 100_000)]
    assert all(delta == 0 for n, delta in moves if n + 1 < COARSE_FLOOR)
    changed = [(n, delta) for n, delta in moves if delta]
    assert all(delta >= 10 and delta >= (n + 1) // 100 for n, delta in changed)
    assert len(changed) / len(moves) < 0.05  # one viewer in twenty at most moves it


def test_the_view_coarsens_state_and_leaves_request_counters_exact() -> None:
    registry = CollectorRegistry()
    sessions = Gauge("streamtally_active_sessions", "Playback sessions", registry=registry)
    accepted = Counter("streamtally_events_accepted_total", "Events", registry=registry)
    secret = Counter("streamtally_new_unclassified_total", "Not in the table", registry=registry)
    sessions.set(1234)
    accepted.inc(1234)
    secret.inc()
    text = generate_latest(operator_registry(registry)).decode()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values == {
        "streamtally_active_sessions": 1200.0,
        "streamtally_events_accepted_total": 1234.0,
    }
