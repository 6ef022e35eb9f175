"""Read the numbers the benchmark needs from a Prometheus text exposition (/metrics)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample as ``(name, sorted labels) -> value``."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(samples: Samples, name: str) -> float:
    """The sum of a metric over all its label values (0 if absent)."""
    return sum(v for (n, _), v in samples.items() if n == name)


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """A metric's values keyed by one label."""
    out: dict[str, float] = {}
    for (n, labels), v in samples.items():
        if n == name:
            out[dict(labels).get(label, "")] = out.get(dict(labels).get(label, ""), 0.0) + v
    return out


def steps(samples: Samples) -> dict[str, tuple[float, float]]:
    """``streamtally_pipeline_step_seconds{step}``: step -> (count, sum of seconds)."""
    counts = by_label(samples, "streamtally_pipeline_step_seconds_count", "step")
    sums = by_label(samples, "streamtally_pipeline_step_seconds_sum", "step")
    return {step: (counts[step], sums.get(step, 0.0)) for step in counts}


def slow_passes(samples: Samples, histogram: str, bound: str) -> float:
    """How many observations of a histogram (summed over its other labels) exceeded the
    bucket bound ``bound`` (its ``le`` label as exposed, e.g. ``"0.01"``)."""
    count = total(samples, histogram + "_count")
    within = sum(
        v
        for (n, labels), v in samples.items()
        if n == histogram + "_bucket" and dict(labels).get("le") == bound
    )
    return count - within
