"""docs/operations.md agrees with the benchmark, the alert rules and the CLI, and the
README links it."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path

import pytest
import yaml

from aggregator.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"


def test_the_readme_links_the_operations_guide() -> None:
    assert "docs/operations.md" in (ROOT / "README.md").read_text()
    assert "docs/operations.md" in (ROOT / "deploy" / "README.md").read_text()


def _reports(text: str, label: str) -> int:
    [value] = re.findall(rf"\| {re.escape(label)} \| ([\d,]+) \|", text)
    return int(value.replace(",", ""))


def per_core(kind: str) -> int:
    """Reports per core the guide uses, checked against docs/performance.md's result: the
    run's ratio to its own baseline (bare aiohttp for plain, aiohttp + one HPKE open for
    sealed), applied to that baseline on a quiet host as the guide states it."""
    text = DOC.read_text()
    [stated] = re.findall(rf"\| {kind} reports per core[^|]*\| ~([\d,]+) /s \|", text)
    value = int(stated.replace(",", ""))
    [(aiohttp, hpke)] = re.findall(r"bare\s+aiohttp ([\d,]+) req/s, HPKE handler ([\d,]+)/s", text)
    baseline = int((aiohttp if kind == "plain" else hpke).replace(",", ""))
    performance = (ROOT / "docs" / "performance.md").read_text()
    measured = _reports(performance, f"StreamTally, {kind} CMCD")
    base_label = (
        "aiohttp+uvloop 204 (framework limit)"
        if kind == "plain"
        else "aiohttp+uvloop + 1 HPKE open (sealed ceiling)"
    )
    ratio = measured / _reports(performance, base_label)
    assert abs(ratio * baseline - value) / value < 0.10, (kind, ratio, baseline)
    return value


@pytest.mark.parametrize("kind", ["plain", "sealed"])
def test_the_sizing_table_follows_from_the_benchmark(kind: str) -> None:
    core = per_core(kind)
    [row] = [line for line in DOC.read_text().splitlines() if line.startswith(f"| {kind} | ")]
    cores = [int(n) for n in re.findall(r"(\d+) cores", row)]
    expected = []
    for rate in (35_000, 100_000):
        expected += [math.ceil(rate / core), math.ceil(rate / core / 0.6)]
    assert cores == expected


def test_every_alert_rule_is_explained() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "cluster" / "prometheus" / "alerts.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"]}
    section = DOC.read_text().split("## Alerts", 1)[1].split("\n## ", 1)[0]
    explained = set(re.findall(r"\bStreamTally[A-Za-z]+\b", section))
    assert explained == alerts


def test_the_commands_in_the_guide_parse_with_the_real_cli() -> None:
    commands = re.findall(r"`(streamtally (?:keys|accounts) [^`]+)`", DOC.read_text())
    assert len(commands) >= 2
    for command in commands:
        argv = shlex.split(command.replace("<id>", "acc_x").replace("\n", " "))
        build_parser().parse_args(argv[1:])
