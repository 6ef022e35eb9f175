"""``serve --workers 2`` (two collector processes on one port, one aggregator process)
publishes exactly the numbers of ``serve``, and serves the whole API on the same port; a
SIGHUP in the middle of the traffic hot restarts every process in place, one at a time
(the workers, then the aggregator parent, which keeps its children), without changing a
number."""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.chserver import ClickHouseProcess
from tests.cluster.traffic import Side, assert_same_numbers, create_account, requests
from tests.integration.restart_traffic import (
    ADMIN,
    http_call,
    make_db,
    serve,
    wait_early_in_minute,
)
from tests.integration.serveproc import ServeProcess

pytestmark = pytest.mark.timeout(300)


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def rolled(proc: ServeProcess, timeout: float = 60.0) -> None:
    """Until the parent answers with its new code (``/healthz``, through a worker)."""
    deadline = time.monotonic() + timeout
    while True:
        status, raw = http_call("GET", proc.url + "/healthz")
        if status == 200 and json.loads(raw).get("generation") == 1:
            return
        assert time.monotonic() < deadline, "no roll:\n" + "".join(proc.output)[-3000:]
        time.sleep(0.1)


@pytest.mark.parametrize("roll", ["none", "sighup-mid-traffic"])
def test_serve_with_two_workers_counts_like_serve(
    roll: str, clickhouse_server: ClickHouseProcess, tmp_path: Path
) -> None:
    alone_db = make_db(clickhouse_server, f"alone_{uuid.uuid4().hex[:8]}")
    workers_db = make_db(clickhouse_server, f"workers_{uuid.uuid4().hex[:8]}")
    alone = serve(tmp_path / "alone", alone_db)
    workers = ServeProcess(
        tmp_path / "workers",
        "--clickhouse-url", workers_db.url, "--database", workers_db.database,
        "--admin-token", ADMIN["Authorization"].removeprefix("Bearer "),
        "--trusted-proxies", "127.0.0.1/32",
        "--flush-seconds", "3600", "--provisional-seconds", "3600", "--workers", "2",
    )  # fmt: skip
    try:
        workers.start()
        a_accounts = [create_account(alone.url, f"a{i}") for i in range(2)]
        w_accounts = [create_account(workers.url, f"w{i}") for i in range(2)]  # via a worker
        for account in w_accounts:  # every worker knows the account (preflights count nothing)
            deadline, answered = time.monotonic() + 5, 0
            while answered < 10:  # in a row: the kernel spreads them over both workers
                status, _ = http_call(
                    "OPTIONS", f"{workers.url}/v1/r/{account['embed_key']}",
                    headers={"Origin": "https://a.example"},
                )  # fmt: skip
                answered = answered + 1 if status == 204 else 0
                assert time.monotonic() < deadline
        traffic = requests(seed=21, sessions=40, events=10)
        one = Side([alone.url], [str(a["embed_key"]) for a in a_accounts])
        two = Side([workers.url], [str(a["embed_key"]) for a in w_accounts])
        rng = random.Random(1)
        assert workers.proc is not None
        pid = workers.proc.pid
        before = children(pid)
        assert len(before) == 2
        wait_early_in_minute(35)  # the traffic takes about 5 s (15 s with the roll)
        for n, request in enumerate(traffic):
            if roll != "none" and n == len(traffic) // 3:
                os.kill(pid, signal.SIGHUP)  # the workers restart one by one under the load
            one.send(request, rng, lambda url: True)
            two.send(request, rng, lambda url: True)
        assert one.accepted == two.accepted == len(traffic)
        if roll != "none":
            rolled(workers)
            output = "".join(workers.output)
            assert output.count("hot restart 1: state taken over") == 3, output[-3000:]
            assert children(pid) == before  # each in place: the same processes
            assert workers.proc.pid == pid
        time.sleep(1.0)  # the workers' links ship within milliseconds; then flush both
        for url in (alone.url, workers.url):  # the second through a worker to the aggregator
            status, raw = http_call("POST", url + "/v1/admin/flush", b"", ADMIN)
            assert status == 200, raw
        compared = sum(
            assert_same_numbers(
                (alone.url, str(a["api_token"])), (workers.url, str(w["api_token"]))
            )
            for a, w in zip(a_accounts, w_accounts, strict=True)
        )
        assert compared > 30
    finally:
        workers.stop()
        alone.stop()
