"""A rolling hot restart of every process of a cluster under load counts like no restart.

A cluster on 127.0.0.1 (the real ClickHouse test server, 2 ``aggregate`` shards, 2
``collect`` collectors, each a real process) and one ``serve`` take the same traffic of
several accounts; while it runs, every process of the cluster gets ``SIGHUP`` in turn, each
once the one before answers again. Each must restart in place (same pid, ``generation`` 1
in its ``/healthz``), and afterwards every number of every account equals the single
process's: nothing counted twice (collectors send again what a shard had not
acknowledged; the shard's dedupe, handed over, drops repeats) and nothing lost."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chserver import ClickHouseProcess
from tests.cluster.procs import Cluster
from tests.cluster.test_cluster import cluster_accounts, flush, known_everywhere
from tests.cluster.traffic import Side, assert_same_numbers, create_account, requests
from tests.integration.restart_traffic import http_call, make_db, serve, wait_early_in_minute
from tests.integration.serveproc import ServeProcess

pytestmark = pytest.mark.timeout(300)

RESTART_SECONDS = 30.0  # from SIGHUP until the process answers with its new code


@pytest.fixture
def both(
    clickhouse_server: ClickHouseProcess, tmp_path: Path
) -> Iterator[tuple[ServeProcess, Cluster]]:
    single = serve(tmp_path / "single", make_db(clickhouse_server, f"one_{uuid.uuid4().hex[:8]}"))
    db = make_db(clickhouse_server, f"rolling_{uuid.uuid4().hex[:8]}")
    cluster = Cluster(db, tmp_path / "cluster", collectors=2)
    try:
        cluster.start()
        yield single, cluster
    finally:
        single.stop()
        cluster.stop()


def generation(proc: ServeProcess) -> int | None:
    """The ``generation`` its ``/healthz`` shows (None: no answer, or none shown)."""
    status, raw = http_call("GET", proc.url + "/healthz")
    if status not in (200, 503):
        return None
    value = json.loads(raw).get("generation")
    return value if isinstance(value, int) else None


class Roller(threading.Thread):
    """SIGHUP to one process; done once it answers with generation 1, in the same pid."""

    def __init__(self, proc: ServeProcess) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.seconds: float | None = None
        assert proc.proc is not None
        self.pid = proc.proc.pid

    def run(self) -> None:
        started = time.monotonic()
        os.kill(self.pid, signal.SIGHUP)
        while time.monotonic() - started < RESTART_SECONDS:
            if generation(self.proc) == 1:
                self.seconds = time.monotonic() - started
                return
            time.sleep(0.05)


def test_a_rolling_hot_restart_of_every_process_counts_like_no_restart(
    both: tuple[ServeProcess, Cluster],
) -> None:
    single, cluster = both
    clustered = cluster_accounts(cluster, "rolling")
    alone = [create_account(single.url, f"rolling-{i}") for i in range(len(clustered))]
    deadline = time.monotonic() + 30
    while not all(known_everywhere(cluster, str(a["embed_key"])) for a in clustered):
        assert time.monotonic() < deadline, "accounts never reached the collectors"
        time.sleep(0.1)
    # Every process in turn, collectors and shards interleaved.
    order = [cluster.collect[0], cluster.aggregators[0], cluster.collect[1], cluster.aggregators[1]]
    pids = {id(p): p.proc.pid for p in order if p.proc is not None}
    traffic = requests(seed=11, sessions=48, events=10)
    at = {(k + 1) * len(traffic) // (len(order) + 1): proc for k, proc in enumerate(order)}
    one = Side([single.url], [str(a["embed_key"]) for a in alone])
    many = Side([c.url for c in cluster.collect], [str(a["embed_key"]) for a in clustered])
    rng = random.Random(5)
    rollers: list[Roller] = []
    wait_early_in_minute(12)  # the traffic and the restarts stay within one minute
    started = time.monotonic()
    for n, request in enumerate(traffic):
        if n in at:
            if rollers:  # one at a time: the one before answers again first
                rollers[-1].join(RESTART_SECONDS)
            rollers.append(Roller(at[n]))
            rollers[-1].start()  # the next reports meet the restarting process
        one.send(request, rng, lambda url: True)
        many.send(request, rng, lambda url: True)
    rollers[-1].join(RESTART_SECONDS)
    elapsed = time.monotonic() - started
    outputs = ["".join(p.output) for p in order]
    for roller, proc, output in zip(rollers, order, outputs, strict=True):
        assert roller.seconds is not None, "no hot restart:\n" + output[-3000:]
        assert proc.alive()
        assert proc.proc is not None
        assert proc.proc.pid == pids[id(proc)]
        assert "state taken over" in output, output[-3000:]
    assert one.accepted == many.accepted == len(traffic)
    cluster.drained()
    flush(single.url)
    flush(cluster.aggregators[0].url)  # flushes every shard
    compared = 0
    for a, c in zip(alone, clustered, strict=True):
        compared += assert_same_numbers(
            (single.url, str(a["api_token"])), (cluster.aggregators[1].url, str(c["api_token"]))
        )
    assert compared > 50  # the traffic published something to compare
    # Each shard's restart broke its links and they came back (what the report measures).
    stalls = [
        float(m)
        for output in outputs
        for m in re.findall(r"link to shard \d up again after ([\d.]+) s", output)
    ]
    assert len(stalls) >= len(cluster.aggregators) * len(cluster.collect), stalls
    print(
        f"\nrolling restart: {len(traffic)} reports in {elapsed:.1f} s; restarts "
        + ", ".join(f"{r.seconds:.2f} s" for r in rollers if r.seconds is not None)
        + f"; longest link stall {max(stalls):.2f} s; 503s {sum(many.refused.values())}"
    )
