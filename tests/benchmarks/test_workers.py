"""`python -m benchmarks --quick --workers 2`: StreamTally runs as ``serve --workers 2`` (two
collector processes on one port, one aggregator process); every event answered 204 was
counted by the aggregator, and each process's CPU is reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ("streamtally-plain", "streamtally-sealed")
# With the aiohttp baseline first, wrk's request pool is sized from what this machine does
# (without it, from 40,000/s: a pool wrk spends a 1 s quick run reading on a busy machine).
ONLY = ("aiohttp", *TARGETS)


@pytest.fixture(scope="module")
def workers_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--workers", "2",
         "--only", ",".join(ONLY), "--out", str(out)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, orjson.loads((out / "results.json").read_bytes())


def test_every_event_answered_204_is_counted_by_the_aggregator(
    workers_run: tuple[Path, dict[str, Any]],
) -> None:
    _, result = workers_run
    assert result["workers"] == 2
    correctness = result["correctness"]
    assert correctness["ok"], correctness["detail"]
    assert correctness["events_sent"] == correctness["events_counted"] > 0
    assert correctness["views_expected"] == correctness["views_stored"] > 0
    for phase in correctness["phases"]:
        assert phase["ok"], phase
        assert phase["dropped"] == 0, phase
        if phase["tool"] == "loadgen":
            assert phase["events_sent"] == phase["events_counted"], phase


@pytest.mark.parametrize("target", TARGETS)
def test_each_process_is_measured_at_saturation(
    workers_run: tuple[Path, dict[str, Any]], target: str
) -> None:
    _, result = workers_run
    measured = result["targets"][target]
    assert measured["saturation"]["rps"] > 0
    for point in measured["points"]:
        assert point["answered"] > 0
        assert point["p50_ms"] <= point["p99_ms"]
    processes = measured["processes"]
    assert processes["workers"] == 2
    assert processes["aggregator_cpu_seconds"] > 0
    assert processes["aggregator_events_per_cpu_second"] > 0
    assert len(processes["collector_cpu_seconds"]) == 2
    assert all(cpu > 0 for cpu in processes["collector_cpu_seconds"])  # both took reports
    assert processes["collector_reports_per_cpu_second"] > 0


def test_the_report_has_a_table_per_process(workers_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = workers_run
    text = (out / "results.md").read_text()
    assert "## serve --workers 2: each process at saturation" in text
    assert "reports per collector CPU-second" in text
