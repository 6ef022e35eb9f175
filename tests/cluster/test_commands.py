"""``streamtally aggregate`` and ``streamtally collect`` refuse a bad start with one line
naming the setting (exit status 2), from a flag or from ``STREAMTALLY_*``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.cli import build_parser
from tests.chserver import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 40


def streamtally(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )


def aggregate_args(tmp: Path) -> list[str]:
    return [
        "aggregate", "--data-dir", str(tmp / "d"), "--port", str(free_port()),
        "--metrics-listen", "off", "--admin-token", "t" * 24,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "setting", "words"),
    [
        (["--listen", "127.0.0.1:1"], {}, "cluster_secret", ("needed",)),
        (
            ["--listen", "127.0.0.1:1", "--cluster-secret", "short"],
            {},
            "cluster_secret",
            ("at least 32",),
        ),
        (["--cluster-secret", SECRET], {}, "listen", ("needed",)),
        (
            ["--listen", "127.0.0.1:1", "--shard", "2/2"],
            {"STREAMTALLY_CLUSTER_SECRET": SECRET},
            "shard",
            ("I must be below M",),
        ),
        (
            ["--listen", "nowhere", "--cluster-secret", SECRET],
            {},
            "listen",
            ("HOST:PORT",),
        ),
        (
            ["--listen", "127.0.0.1:1", "--cluster-secret", SECRET, "--cluster-tls-cert", "c"],
            {},
            "cluster_tls_key",
            ("go together",),
        ),
    ],
    ids=["no-secret", "short-secret", "no-listen", "shard-out-of-range", "bad-listen", "tls-half"],
)
def test_aggregate_names_the_setting(
    tmp_path: Path, args: list[str], env: dict[str, str], setting: str, words: tuple[str, ...]
) -> None:
    done = streamtally(*aggregate_args(tmp_path), *args, cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"streamtally: {setting}: ")
    assert all(word in line for word in words), line
    assert SECRET not in line


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["--cluster-secret", SECRET], "aggregators"),
        (["--aggregators", "127.0.0.1:1"], "cluster_secret"),
        (["--aggregators", "127.0.0.1:1,off", "--cluster-secret", SECRET], "aggregators"),
    ],
    ids=["no-aggregators", "no-secret", "bad-aggregator"],
)
def test_collect_names_the_setting(tmp_path: Path, args: list[str], setting: str) -> None:
    done = streamtally(
        "collect", "--data-dir", str(tmp_path / "c"), "--port", str(free_port()),
        "--metrics-listen", "off", *args, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"streamtally: {setting}: "), line


@pytest.mark.parametrize("command", ["aggregate", "collect"])
def test_each_command_lists_only_its_own_cluster_flags(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    helptext = sub.choices[command].format_help()  # type: ignore[attr-defined]
    assert "--cluster-secret" in helptext
    assert bool(re.search(r"^\s+--listen LISTEN", helptext, re.M)) == (command == "aggregate")
    assert bool(re.search(r"^\s+--link-buffer-events", helptext, re.M)) == (command == "collect")
    assert not re.search(r"^\s+--workers WORKERS", helptext, re.M)
