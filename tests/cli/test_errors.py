"""Errors a person can act on: every start-up failure of ``streamtally`` is one line that
names the setting and the cause, exit status 2, no traceback -- run as the real command.
The help is plain text, each subcommand lists only its own flags, and an export to a
folder that does not exist names the folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aggregator.cli import build_parser
from tests.chserver import free_port

ROOT = Path(__file__).resolve().parents[2]


# root writes into any folder: to meet a folder it may not write, the command runs without
# the capabilities that override file permissions.
NO_OVERRIDE = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def streamtally(
    *args: str, cwd: Path, as_plain_user: bool = False, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    prefix = NO_OVERRIDE if as_plain_user and os.geteuid() == 0 else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "aggregator.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _not_writable(tmp: Path) -> Path:
    folder = tmp / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    tmp.chmod(0o755)
    return folder


CASES: list[tuple[str, Callable[[Path, int], list[str]], str, tuple[str, ...]]] = [
    ("port-too-big", lambda d, b: ["--port", "70000"], "port", ("65535", "70000")),
    ("port-negative", lambda d, b: ["--port", "-1"], "port", ("65535",)),
    ("port-busy", lambda d, b: ["--port", str(b)], "port", ("in use", "127.0.0.1:")),
    (
        "host-unresolvable",
        lambda d, b: ["--host", "no-such-host.invalid"],
        "host",
        ("no-such-host.invalid", "resolve"),
    ),
    (
        "host-not-here",
        lambda d, b: ["--host", "192.0.2.1"],
        "host",
        ("192.0.2.1", "not an address of this machine"),
    ),
    (
        "metrics-busy",
        lambda d, b: ["--metrics-listen", f"127.0.0.1:{b}"],
        "metrics_listen",
        ("in use",),
    ),
    (
        "metrics-on-the-public-port",
        lambda d, b: ["--port", str(b + 1), "--metrics-listen", f"127.0.0.1:{b + 1}"],
        "metrics_listen",
        ("public",),
    ),
    (
        "data-dir-is-a-file",
        lambda d, b: ["--data-dir", str(d / "a-file")],
        "data_dir",
        ("a-file", "is a file"),
    ),
    (
        "data-dir-under-a-file",
        lambda d, b: ["--data-dir", str(d / "a-file" / "data")],
        "data_dir",
        ("a-file",),
    ),
]


@pytest.mark.parametrize(
    ("make_args", "setting", "needles"),
    [pytest.param(m, s, n, id=i) for i, m, s, n in CASES],
)
def test_serve_start_up_failures_are_one_line_naming_the_setting(
    tmp_path: Path,
    busy_port: int,
    make_args: Callable[[Path, int], list[str]],
    setting: str,
    needles: tuple[str, ...],
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    args = ["serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
            "--metrics-listen", "off", *make_args(tmp_path, busy_port)]  # fmt: skip
    done = streamtally(*args, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr + done.stdout
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "admin token" not in done.stdout  # nothing was started or generated
    assert lines[0].startswith(f"streamtally: {setting}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("command", ["serve", "migrate", "keys-list"])
def test_a_data_dir_that_cannot_be_written_is_named(tmp_path: Path, command: str) -> None:
    folder = _not_writable(tmp_path)
    args = [*command.split("-"), "--data-dir", str(folder)]
    if command == "serve":
        args += ["--port", str(free_port()), "--metrics-listen", "off"]
    done = streamtally(*args, cwd=tmp_path, as_plain_user=True)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("streamtally: data_dir: "), lines
    assert str(folder) in lines[0]
    assert "not writable" in lines[0]


def test_any_free_port_for_both_listeners_is_not_refused(tmp_path: Path) -> None:
    """--port 0 with --metrics-listen 127.0.0.1:0: two free ports, not the same one."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator.cli", "serve", "--data-dir", str(tmp_path / "d"),
         "--port", "0", "--metrics-listen", "127.0.0.1:0"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        for line in proc.stdout:  # until it listens, or dies (the end of its output)
            seen.append(line)
            if "listening on" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert any("listening on" in line for line in seen), seen


def test_export_to_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    done = streamtally(
        "export", "--server", "http://127.0.0.1:9", "--token", "st_x",
        "--output", str(missing / "out.ndjson"), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert [done.stderr.strip()] == done.stderr.strip().splitlines()
    assert "output" in done.stderr
    assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return capsys.readouterr().out


SUBCOMMANDS = [
    (), ("serve",), ("migrate",), ("keys", "list"), ("keys", "rotate"), ("accounts", "create"),
    ("accounts", "update"), ("accounts", "delete"), ("accounts", "list"), ("tokens", "create"),
    ("export",),
]  # fmt: skip


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=lambda a: "-".join(a) or "top")
def test_help_is_plain_text(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    text = help_text(capsys, *argv)
    for markup in ("``", "**", ":mod:", ":func:"):
        assert markup not in text, (markup, text)


SERVICE_ONLY = ("--port", "--host", "--rate-limit-per-second", "--default-k", "--breakdowns")


@pytest.mark.parametrize(
    ("argv", "own", "foreign"),
    [
        (("serve",), SERVICE_ONLY, ("--server", "--token")),
        (
            ("migrate",),
            ("--data-dir", "--clickhouse-url", "--database", "--clickhouse-cluster"),
            SERVICE_ONLY,
        ),
        (("keys", "list"), ("--data-dir", "--key-overlap-seconds"), SERVICE_ONLY),
        (("keys", "rotate"), ("--data-dir",), (*SERVICE_ONLY, "--clickhouse-url")),
        (("accounts", "create"), ("--server", "--admin-token", "--origin"), SERVICE_ONLY),
        (("export",), ("--server", "--token", "--output"), SERVICE_ONLY),
    ],
    ids=["serve", "migrate", "keys-list", "keys-rotate", "accounts-create", "export"],
)
def test_each_subcommand_lists_only_its_own_flags(
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    own: tuple[str, ...],
    foreign: tuple[str, ...],
) -> None:
    text = help_text(capsys, *argv)
    for flag in own:
        assert flag + " " in text or flag + "\n" in text, (flag, argv)
    for flag in foreign:
        assert flag + " " not in text, (flag, argv)
