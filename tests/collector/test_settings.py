"""Settings: ``metrics_listen`` is checked at start, and an error names the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.cli import main
from collector import settings
from collector.config import CollectorConfig
from collector.errors import ConfigError

BAD_LISTEN = {
    "port-only": "9464",
    "port-too-big": "127.0.0.1:99999",
    "port-not-a-number": "127.0.0.1:http",
    "no-port": "127.0.0.1:",
    "no-host": ":9464",
    "ipv6-without-brackets": "::1:9464",
    "bad-ipv6": "[::zz]:9464",
    "space-in-host": "my host:9464",
    "url-not-address": "http://127.0.0.1:9464",
}
GOOD_LISTEN = {
    "default": ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    "any-interface": ("0.0.0.0:9464", ("0.0.0.0", 9464)),
    "ipv6": ("[::1]:9464", ("::1", 9464)),
    "hostname": ("localhost:0", ("localhost", 0)),
    "off": ("off", None),
    "empty": ("", None),
}


@pytest.mark.parametrize("value", BAD_LISTEN.values(), ids=BAD_LISTEN.keys())
@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_a_bad_metrics_listen_is_a_config_error_naming_the_setting(value: str, source: str) -> None:
    cli = {"metrics_listen": value} if source == "flag" else {}
    env = {"STREAMTALLY_METRICS_LISTEN": value} if source == "env" else {}
    file = {"metrics_listen": value} if source == "file" else {}
    with pytest.raises(ConfigError) as caught:
        settings.load(CollectorConfig, cli, env, file)
    assert caught.value.setting == "metrics_listen"
    assert str(caught.value).startswith("metrics_listen: ")


@pytest.mark.parametrize(("value", "parsed"), GOOD_LISTEN.values(), ids=GOOD_LISTEN.keys())
def test_good_metrics_listen_values_load(value: str, parsed: tuple[str, int] | None) -> None:
    config = settings.load(CollectorConfig, {"metrics_listen": value}, {}, {})
    assert settings.parse_listen(config.metrics_listen) == parsed


def test_the_default_listens_on_loopback_only() -> None:
    config = settings.load(CollectorConfig, {}, {}, {})
    assert settings.parse_listen(config.metrics_listen) == ("127.0.0.1", 9464)


def test_serve_refuses_a_bad_metrics_listen_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["serve", "--data-dir", str(tmp_path), "--metrics-listen", "9464"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("streamtally: metrics_listen: ")
    assert not any(tmp_path.iterdir())  # nothing was started or written
