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
HELD = 4  # viewers whose events a collector holds across its restart (a multiple of k)


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


def counted(shard: ServeProcess) -> int:
    """Events the shard counted from its links (an exact operator metric)."""
    text = shard.metrics().decode()
    found = re.search(r'^streamtally_link_events_total\{outcome="counted"\} (\S+)', text, re.M)
    return int(float(found.group(1))) if found else 0


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
    wait_early_in_minute(25)  # the traffic and the restarts (10-25 s) stay within a minute
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


def test_a_collector_restarted_while_its_shard_is_away_hands_over_what_it_holds(
    clickhouse_server: ClickHouseProcess, tmp_path: Path
) -> None:
    """The events a collector holds when it restarts are not lost: its shard is stopped
    (SIGSTOP), so they cannot be delivered in the drain before the exec; the new code gets
    them in memory and delivers them once the shard is back, though no player sends them
    again."""
    db = make_db(clickhouse_server, f"held_{uuid.uuid4().hex[:8]}")
    cluster = Cluster(db, tmp_path, shards=1, collectors=1)
    try:
        cluster.start()
        account = create_account(cluster.aggregators[0].url, "held")
        deadline = time.monotonic() + 30
        while not known_everywhere(cluster, str(account["embed_key"])):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        shard, collector = cluster.aggregators[0], cluster.collect[0]
        assert shard.proc is not None
        assert collector.proc is not None
        os.kill(shard.proc.pid, signal.SIGSTOP)
        try:
            time.sleep(0.5)
            answers: list[int] = []

            def player(i: int) -> None:  # viewers at once, within the first second
                ts = int(time.time() * 1000)
                line = f'cid="c",e=ps,sid="held-{i}",sn=0,sta=p,ts={ts},v=2'
                status, _ = http_call(
                    "POST", f"{collector.url}/v1/r/{account['embed_key']}", line.encode(),
                    {"Content-Type": "application/cmcd", "User-Agent": "Mozilla/5.0 Firefox/140.0",
                     "X-Forwarded-For": f"198.51.100.{i + 1}"},
                )  # fmt: skip
                answers.append(status)

            players = [threading.Thread(target=player, args=(i,)) for i in range(HELD)]
            for t in players:
                t.start()
            for t in players:
                t.join(30)
            assert answers == [503] * HELD  # not delivered in time: players would resend
            roller = Roller(collector)
            roller.start()
            roller.join(RESTART_SECONDS)
            assert roller.seconds is not None, "".join(collector.output)[-3000:]
        finally:
            os.kill(shard.proc.pid, signal.SIGCONT)
        output = "".join(collector.output)
        held = re.search(r"state taken over \((\d+) held events", output)
        assert held is not None, output[-3000:]
        assert int(held.group(1)) == HELD
        # Delivered: the shard counted them (Cluster.drained() reads a coarse gauge, 0
        # below 100 events, so it cannot tell 4 held events from none).
        deadline = time.monotonic() + 30
        while counted(shard) < HELD:
            assert time.monotonic() < deadline, counted(shard)
            time.sleep(0.05)
        flush(shard.url)
        token = {"Authorization": f"Bearer {account['api_token']}"}
        status, raw = http_call("GET", shard.url + "/v1/stats?granularity=day", headers=token)
        assert status == 200, raw
        [row] = json.loads(raw)["rows"]  # each held event counted, once (k = 2: all shown)
        assert (row["views"], row["unique_viewers"]) == (HELD, HELD), row
    finally:
        cluster.stop()
