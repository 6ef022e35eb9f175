"""`python -m benchmarks --quick` as CI runs it: writes its three files, and every event the
service answered 204 for was counted (and every view stored). Its wall time is the
benchmark's own figure (``wall_seconds``), not asserted here: a shared CI machine would make
that a test of the machine; the subprocess has a hard stop so CI always ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import runner

ROOT = Path(__file__).resolve().parents[2]
HARD_STOP_SECONDS = 300  # quick mode takes about a minute on a quiet 2-core machine


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench") / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=HARD_STOP_SECONDS,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, orjson.loads((out / "results.json").read_bytes()), proc.stderr


def test_every_answered_event_is_counted_and_every_view_stored(
    quick_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, result, _ = quick_run
    correctness = result["correctness"]
    assert correctness["ok"], correctness["detail"]
    assert correctness["events_sent"] > 0
    assert correctness["events_sent"] == correctness["events_counted"]
    assert correctness["views_expected"] == correctness["views_stored"] > 0
    for phase in correctness["phases"]:
        assert phase["ok"], phase
        assert phase["dropped"] == 0, phase
        if phase["tool"] == "loadgen":
            assert phase["events_sent"] == phase["events_counted"], phase
        else:  # wrk may stop with requests in flight: counted lies between the bounds
            assert phase["events_sent"] <= phase["events_counted"], phase
            assert phase["events_counted"] <= phase["sent_upper_bound"], phase


@pytest.mark.parametrize(
    "target", ["aiohttp", "aiohttp+hpke", "streamtally-plain", "streamtally-sealed"]
)
def test_each_server_has_a_saturation_and_a_latency_curve(
    quick_run: tuple[Path, dict[str, Any], str], target: str
) -> None:
    _, result, _ = quick_run
    measured = result["targets"][target]
    assert measured["saturation"]["rps"] > 0
    assert [p["fraction"] for p in measured["points"]] == [0.5, 0.8]
    for point in measured["points"]:
        assert point["answered"] > 0
        assert point["p50_ms"] <= point["p99_ms"] <= point["p999_ms"]


def test_nginx_is_measured_or_its_absence_is_said(
    quick_run: tuple[Path, dict[str, Any], str],
) -> None:
    _, result, stderr = quick_run
    if "nginx" in result["targets"]:
        assert result["targets"]["nginx"]["saturation"]["rps"] > 0
    else:
        assert "nginx is not installed" in stderr
        assert any("nginx" in note for note in result["notes"])


@pytest.mark.parametrize("name", ["results.json", "results.md", "latency.png"])
def test_result_files_are_written(quick_run: tuple[Path, dict[str, Any], str], name: str) -> None:
    out, _, _ = quick_run
    data = (out / name).read_bytes()
    assert data
    if name.endswith(".png"):
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    if name.endswith(".md"):
        text = data.decode()
        assert "| StreamTally, sealed CMCD |" in text
        assert "## Correctness" in text


@pytest.mark.parametrize("target", ["streamtally-plain", "streamtally-sealed"])
def test_streamtally_is_measured_at_one_and_at_several_events_per_report(
    quick_run: tuple[Path, dict[str, Any], str], target: str
) -> None:
    out, result, _ = quick_run
    batches = result["targets"][target]["batches"]
    assert [b["batch"] for b in batches] == list(runner.BATCHES) == result["batches"]
    one, several = batches
    assert one["events_per_report"] == 1
    assert one["events_rps"] == pytest.approx(one["saturation"]["rps"], rel=1e-3)
    assert 1 < several["events_per_report"] <= several["batch"]
    for b in batches:
        assert b["events_rps"] > 0
        per_core = b["viewers_per_core"]
        assert set(per_core) == {"10", "30"}
        assert per_core["10"] == pytest.approx(b["events_per_cpu_second"] * 10, rel=1e-3)
    assert "## Events per report, events/s and viewers per core" in (out / "results.md").read_text()
