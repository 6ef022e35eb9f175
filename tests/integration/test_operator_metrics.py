"""Operator metrics are not public and do not move per viewer of one account (issue 10.5).

The attack this answers: an unauthenticated reader of ``GET /metrics`` on the public port
watched ``streamtally_active_sessions`` and ``streamtally_open_cells`` go up by one the moment
one viewer of any account pressed play. Here the attacker first tries the public port, then
(as if they were the operator, or whoever the operator's monitoring system ships metrics
to) reads the operator listener around one viewer's start and looks for anything that moved.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from aggregator.app import RUNNER_OPTIONS, create_app
from aggregator.opmetrics import OPERATOR_LISTENER
from aggregator.service import SERVICE
from collector.errors import ConfigError
from tests.conftest import ChDatabase
from tests.integration.conftest import Running, make_configs

# Families that may move when one viewer's report arrives, and why they are not evidence of
# the viewer: they count requests and time spent, over every account together, with no
# account, stream or viewer label — the same load a network counter in front of the service
# sees (docs/privacy.md, "Operator metrics"). The attack below ignores them and only them.
REQUEST_COUNTERS = frozenset(
    {
        "streamtally_reports_accepted_total",
        "streamtally_reports_rejected_total",
        "streamtally_events_accepted_total",
        "streamtally_events_dropped_total",
        "streamtally_pipeline_step_seconds",  # _count and _sum per step: requests and time
        "streamtally_flush_seconds",  # one more flush cycle (the admin flush), its time
        "process_cpu_seconds_total",
        "streamtally_gc_pause_seconds",  # passes of the collector: every request allocates
    }
)
STATE_GAUGES = ("streamtally_active_sessions", "streamtally_open_cells")
STREAM = "stream-of-one-viewer"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample but those of REQUEST_COUNTERS, as (name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name in REQUEST_COUNTERS or f"{family.name}_total" in REQUEST_COUNTERS:
            continue
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def report(sta: str, sn: int) -> str:
    ts = int(time.time() * 1000)
    return f'cid="{STREAM}",e=ps,sid="the-one-viewer",sn={sn},sta={sta},ts={ts},v=2\n'


async def test_the_public_port_does_not_serve_metrics(running: Running) -> None:
    resp = await running.http.get(running.url + "/metrics")
    assert resp.status == 404
    text = await resp.text()
    assert "streamtally_" not in text


async def test_the_operator_listener_serves_prometheus_text(running: Running) -> None:
    resp = await running.http.get(running.operator_url + "/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(await resp.text())}
    assert {"streamtally_events_accepted", *STATE_GAUGES} <= names


async def test_healthz_stays_public_and_carries_nothing_that_counts(running: Running) -> None:
    account = await running.create_account(k=2)
    before = await (await running.http.get(running.url + "/healthz")).json()
    resp = await running.post(account["embed_key"], report("s", 0))
    assert resp.status == 204
    after = await (await running.http.get(running.url + "/healthz")).json()
    # generation counts hot restarts of the process (aggregator/hot_restart.py): no viewer
    assert before == after == {"status": "ok", "clickhouse": "up", "generation": 0}


async def test_one_viewer_starting_moves_no_operator_metric(running: Running) -> None:
    """The side channel: read every operator metric, let one viewer of one account start
    (a report with sta=s, then sta=p) and flush, read again. Nothing may have moved but the
    request counters and timings of REQUEST_COUNTERS (see there why they may); and no
    sample may name the account, its stream or the viewer."""
    account = await running.create_account(k=2)
    other = await running.create_account("other", k=2)
    before = samples(await running.metrics())
    for present in STATE_GAUGES:
        assert any(name == present for name, _ in before), present
    for sn, sta in enumerate(("s", "p")):
        resp = await running.post(account["embed_key"], report(sta, sn))
        assert resp.status == 204
    assert running.app[SERVICE].aggregator.stats()["active_sessions"] == 1  # held
    await running.flush()
    text = await running.metrics()
    after = samples(text)
    moved = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    assert moved == {}
    for needle in (account["account_id"], other["account_id"], STREAM, "the-one-viewer"):
        assert needle not in text


async def test_a_taken_metrics_port_is_a_config_error_naming_the_setting(
    tmp_path: Path, ch_database: ChDatabase
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        configs = make_configs(tmp_path, ch_database, metrics_listen=f"127.0.0.1:{port}")
        server = TestServer(await create_app(*configs), host="127.0.0.1")
        with pytest.raises(ConfigError) as caught:
            await server.start_server(**RUNNER_OPTIONS)
        await server.close()
    assert caught.value.setting == "metrics_listen"


async def test_the_public_address_is_refused_as_metrics_listen(
    tmp_path: Path, ch_database: ChDatabase
) -> None:
    configs = make_configs(
        tmp_path, ch_database, host="127.0.0.1", port=8080, metrics_listen="127.0.0.1:8080"
    )
    with pytest.raises(ConfigError) as caught:
        await create_app(*configs)
    assert caught.value.setting == "metrics_listen"


@pytest.mark.settings(metrics_listen="off")
async def test_off_means_no_metrics_listener(running: Running) -> None:
    assert running.app[OPERATOR_LISTENER].url is None
    resp = await running.http.get(running.url + "/metrics")
    assert resp.status == 404
