"""The deploy files agree with the code: settings keys exist and validate, the commands
they run parse with the real CLI, the nginx configuration passes `nginx -t`, and the
Dockerfile copies what exists. (No Docker engine runs here: checked statically.)"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from aggregator.cli import build_parser
from aggregator.config import AggregatorConfig
from collector import settings
from collector.config import CollectorConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_the_example_settings_file_loads_and_validates() -> None:
    values = settings.read_file(DEPLOY / "streamtally.toml")
    collector = settings.load(CollectorConfig, {}, {}, values)
    aggregator = settings.load(AggregatorConfig, {}, {}, values)
    assert collector.trusted_proxies == ("127.0.0.1/32",)
    assert aggregator.default_k == 10
    assert "admin_token" not in values
    assert "clickhouse_url" not in values
    assert settings.parse_listen(collector.metrics_listen) == ("127.0.0.1", 9464)


def test_the_dockerfile_exposes_the_metrics_port_its_command_listens_on() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    [cmd] = [line for line in text.splitlines() if line.startswith("CMD ")]
    args = build_parser().parse_args(json.loads(cmd[4:])[1:])
    collector = settings.load(CollectorConfig, args, {}, {})
    metrics = settings.parse_listen(collector.metrics_listen)
    assert metrics is not None
    exposed = {int(p) for line in text.splitlines() if line.startswith("EXPOSE ") for p in
               line.split()[1:]}  # fmt: skip
    assert exposed == {collector.port, metrics[1]}
    assert metrics[1] != collector.port


def _command(line: str) -> list[str]:
    words = shlex.split(line)
    return words[words.index("serve") :]


@pytest.mark.parametrize(
    "source",
    ["streamtally.service", "Dockerfile"],
    ids=["systemd", "docker"],
)
def test_the_commands_parse_with_the_real_cli(source: str) -> None:
    text = (DEPLOY / source).read_text()
    if source == "Dockerfile":
        [cmd] = [line for line in text.splitlines() if line.startswith("CMD ")]
        argv = json.loads(cmd[4:])[1:]
    else:
        [cmd] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
        argv = _command(cmd)
    args = build_parser().parse_args(argv)
    assert args.command == "serve"
    assert args.data_dir


def test_the_dockerfile_copies_what_exists() -> None:
    root = DEPLOY.parent
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (root / source).exists(), source


def test_nginx_accepts_the_scale_out_configuration(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is not installed (tests/run.sh installs it with apt)"
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(DEPLOY / "nginx-scaleout.conf")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    conf = (DEPLOY / "nginx-scaleout.conf").read_text()
    assert "hash $remote_addr consistent" in conf
    assert "access_log off" in conf
    assert "location = /metrics {\n            return 404;" in conf


def test_systemd_reload_is_a_hot_restart() -> None:
    """``systemctl reload`` sends SIGHUP to the main process: aggregator/hot_restart.py."""
    text = (DEPLOY / "streamtally.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text.splitlines()
