"""`streamtally bench --quick`, as an operator runs it: the benchmark suite behind the
installed command, with a progress bar, writing results.json, results.md and latency.png;
once against a server it starts, once against one already running given by --url. Only the
plain StreamTally target, to keep CI time small (tests/benchmarks/test_quick.py runs them all
through `python -m benchmarks`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import servers

ROOT = Path(__file__).resolve().parents[2]
STREAMTALLY = Path(sys.executable).with_name("streamtally")
HARD_STOP_SECONDS = 300  # the subprocess is stopped past this: CI always ends


def bench(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert STREAMTALLY.is_file(), "pip install -e . puts the streamtally command next to python"
    return subprocess.run(
        [
            str(STREAMTALLY),
            "bench",
            "--quick",
            "--only",
            "streamtally-plain",
            "--out",
            str(out),
            *extra,
        ],
        cwd=out.parent,  # not the checkout: the command finds the benchmarks on its own
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=HARD_STOP_SECONDS,
        check=False,
    )


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench-started") / "results"
    proc = bench(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, orjson.loads((out / "results.json").read_bytes()), proc.stderr


@pytest.fixture(scope="module")
def running_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.StreamTally]:
    with servers.StreamTally(tmp_path_factory.mktemp("bench-server"), None) as server:
        yield server  # type: ignore[misc]


@pytest.fixture(scope="module")
def given(
    tmp_path_factory: pytest.TempPathFactory, running_server: servers.StreamTally
) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench-given") / "results"
    proc = bench(
        out,
        "--url", running_server.url,
        "--admin-token", running_server.admin_token,
        "--metrics-url", f"http://127.0.0.1:{running_server.metrics_port}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert running_server.alive(), "the benchmark must not stop a server it did not start"
    return out, orjson.loads((out / "results.json").read_bytes()), proc.stderr


@pytest.fixture(params=["started", "given-by-url"])
def run(
    request: pytest.FixtureRequest,
) -> tuple[Path, dict[str, Any], str]:
    name = "started" if request.param == "started" else "given"
    result: tuple[Path, dict[str, Any], str] = request.getfixturevalue(name)
    return result


def test_writes_json_markdown_and_the_plot(run: tuple[Path, dict[str, Any], str]) -> None:
    out, result, _ = run
    assert result["targets"]["streamtally-plain"]["saturation"]["rps"] > 0
    assert "| StreamTally, plain CMCD |" in (out / "results.md").read_text()
    assert (out / "latency.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_every_answered_event_is_counted(run: tuple[Path, dict[str, Any], str]) -> None:
    _, result, _ = run
    correctness = result["correctness"]
    assert correctness["ok"], correctness["detail"]
    assert correctness["events_sent"] == correctness["events_counted"] > 0


def test_the_progress_bar_counts_every_phase_to_the_end(
    run: tuple[Path, dict[str, Any], str],
) -> None:
    """Not a terminal here, so one line per step: saturation, 50 %, 80 %, saturation with
    four events per report (the default --batch 1,4), memory, correctness."""
    _, _, stderr = run
    steps = re.findall(r"^\[(\d+)/(\d+)\] (.+?)  \d+ s$", stderr, re.MULTILINE)
    assert [(int(done), int(total)) for done, total, _ in steps] == [(i, 6) for i in range(1, 7)]
    assert [label for _, _, label in steps] == [
        "streamtally-plain saturation",
        "streamtally-plain 50%",
        "streamtally-plain 80%",
        "streamtally-plain batch 4",
        "memory",
        "correctness",
    ]


def test_a_server_given_by_url_is_said_not_measured(
    given: tuple[Path, dict[str, Any], str], running_server: servers.StreamTally
) -> None:
    _, result, stderr = given
    assert f"streamtally at {running_server.url} (given by URL: not started here)" in stderr
    assert "starting streamtally serve" not in stderr
    assert any("CPU time and memory were not measured" in note for note in result["notes"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--url", "http://127.0.0.1:9"], "--url needs --admin-token and --metrics-url too"),
        (
            ["--url", "ftp://x", "--admin-token", "t", "--metrics-url", "http://127.0.0.1:9"],
            "--url must be http://host:port",
        ),
    ],
    ids=["url-without-token", "url-not-http"],
)
def test_wrong_url_flags_are_refused_with_a_reason(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STREAMTALLY_ADMIN_TOKEN")
    }
    proc = subprocess.run(
        [str(STREAMTALLY), "bench", "--quick", "--out", str(tmp_path / "r"), *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "r").exists()
