"""A cluster on 127.0.0.1 — the real ClickHouse test server, 2 ``aggregate`` shards and
3 ``collect`` collectors, each a real process — counts exactly like one ``serve`` process,
and accounts created, revoked or deleted on any aggregator reach every node within 5 s."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import clickhouse_connect
import pytest

from benchmarks.traffic import Request
from collector.ownership import owner
from tests.chserver import ClickHouseProcess
from tests.cluster.procs import Cluster
from tests.cluster.traffic import (
    Side,
    assert_same_numbers,
    counted_once,
    create_account,
    export,
    post,
    requests,
)
from tests.conftest import ChDatabase
from tests.integration.conftest import CHROME_UA, decode_ohttp_keys, seal_independently
from tests.integration.restart_traffic import (
    ADMIN,
    http_call,
    make_db,
    serve,
    wait_early_in_minute,
)
from tests.integration.serveproc import ServeProcess

pytestmark = pytest.mark.timeout(300)

ACCOUNTS = 4
PROPAGATION_SECONDS = 5.0


@pytest.fixture(scope="module")
def single(
    clickhouse_server: ClickHouseProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess]:
    db = make_db(clickhouse_server, f"single_{uuid.uuid4().hex[:8]}")
    proc = serve(tmp_path_factory.mktemp("single"), db)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def cluster_db(clickhouse_server: ClickHouseProcess) -> ChDatabase:
    return make_db(clickhouse_server, f"cluster_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def cluster(cluster_db: ChDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(cluster_db, tmp_path_factory.mktemp("cluster"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def known_everywhere(cluster: Cluster, embed_key: str) -> bool:
    """Whether every live collector knows the account (a CORS preflight: counts nothing)."""
    for proc in cluster.collect:
        if not proc.alive():
            continue
        status, _ = http_call(
            "OPTIONS", f"{proc.url}/v1/r/{embed_key}", headers={"Origin": "https://a.example"}
        )
        if status != 204:
            return False
    return True


def cluster_accounts(cluster: Cluster, label: str) -> list[dict[str, object]]:
    """ACCOUNTS accounts, half of them owned by each shard, created on alternate aggregators."""
    by_shard: dict[int, list[dict[str, object]]] = {0: [], 1: []}
    n = 0
    while min(len(v) for v in by_shard.values()) < ACCOUNTS // 2:
        account = create_account(cluster.aggregators[n % 2].url, f"{label}-{n}")
        by_shard[owner(str(account["account_id"]), 2)].append(account)
        n += 1
    return by_shard[0][: ACCOUNTS // 2] + by_shard[1][: ACCOUNTS // 2]


def flush(url: str) -> None:
    status, raw = http_call("POST", url + "/v1/admin/flush", b"", ADMIN)
    assert status == 200, raw


@pytest.mark.parametrize("fault", ["none", "collector-killed"])
def test_every_number_of_every_account_equals_one_serve(
    fault: str, single: ServeProcess, cluster: Cluster
) -> None:
    clustered = cluster_accounts(cluster, fault)
    alone = [create_account(single.url, f"{fault}-{i}") for i in range(ACCOUNTS)]
    deadline = time.monotonic() + 30
    while not all(known_everywhere(cluster, str(a["embed_key"])) for a in clustered):
        assert time.monotonic() < deadline, "accounts never reached the collectors"
        time.sleep(0.1)
    traffic = requests(seed=len(fault), sessions=48, events=10)
    one = Side([single.url], [str(a["embed_key"]) for a in alone])
    many = Side([c.url for c in cluster.collect], [str(a["embed_key"]) for a in clustered])
    dead: set[str] = set()
    rng = random.Random(3)
    # The traffic (about 5 s) stays within one minute on both sides.
    wait_early_in_minute(45)
    for n, request in enumerate(traffic):
        if fault == "collector-killed" and n == len(traffic) // 2:
            # kill -9 whatever it is doing: it answered 204 only for events its shard had
            # acknowledged; players' next reports reach the others.
            victim = cluster.collect[0]
            victim.stop(signal.SIGKILL)
            dead.add(victim.url)
        one.send(request, rng, lambda url: True)
        many.send(request, rng, lambda url: url not in dead)
    assert one.accepted == many.accepted == len(traffic)
    cluster.drained()
    flush(single.url)
    flush(cluster.aggregators[1].url)  # flushes every shard
    compared = 0
    for a, c in zip(alone, clustered, strict=True):
        expected = (single.url, str(a["api_token"]))
        actual = (cluster.aggregators[0].url, str(c["api_token"]))
        compared += assert_same_numbers(expected, actual)
    assert compared > 50  # the traffic published something to compare
    if fault == "collector-killed":
        cluster.start_collector(0)
        cluster.wait_linked()


OUTAGE_SECONDS = 30.0


@dataclass
class Answer:
    status: int
    retry_after: str | None
    detail: str


def report(url: str, embed_key: str, request: Request) -> Answer:
    """One report as a player sends it; the status, Retry-After and problem detail."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST", f"/v1/r/{embed_key}?player={request.player}", request.body,
            {"Content-Type": "application/cmcd", "X-Forwarded-For": request.viewer.ip,
             "User-Agent": request.viewer.user_agent},
        )  # fmt: skip
        resp = conn.getresponse()
        raw = resp.read()
        detail = str(json.loads(raw).get("detail", "")) if raw else ""
        return Answer(resp.status, resp.getheader("Retry-After"), detail)
    except OSError:
        return Answer(0, None, "")
    finally:
        conn.close()


def same_minute_guard() -> None:
    """Not in the last half second of a minute: a report and its copy to ``serve`` (a few
    ms apart) land in the same minute window."""
    into = time.time() % 60
    if into > 59.5:
        time.sleep(60.2 - into)


def test_a_shard_away_for_30_seconds_refuses_only_its_accounts_and_counts_each_event_once(
    single: ServeProcess, cluster: Cluster
) -> None:
    """Shard 1 stopped (SIGSTOP) for 30 s while a script keeps sending to every collector:
    its accounts' reports get 503 with Retry-After, shard 0's get 204 throughout, and once
    it is back (the players' refused reports sent again) every number equals ``serve``'s
    of the same reports: nothing counted twice, nothing that got a 204 lost."""
    began = time.monotonic()
    clustered = cluster_accounts(cluster, "outage")  # 0, 1: shard 0; 2, 3: shard 1
    alone = [create_account(single.url, f"outage-{i}") for i in range(ACCOUNTS)]
    while not all(known_everywhere(cluster, str(a["embed_key"])) for a in clustered):
        assert time.monotonic() - began < 30, "accounts never reached the collectors"
        time.sleep(0.1)
    traffic = iter(requests(seed=30, sessions=70, events=10))
    keys = [str(a["embed_key"]) for a in clustered]
    alone_keys = [str(a["embed_key"]) for a in alone]
    urls = [c.url for c in cluster.collect]
    sent = 0
    answers: dict[int, list[Answer]] = {i: [] for i in range(ACCOUNTS)}  # during the outage
    retries: list[tuple[Request, int, bool]] = []  # (report, account, already in serve)

    def to_serve(request: Request, index: int) -> None:
        assert post(single.url, alone_keys[index], request) == 204

    def to_cluster(request: Request, index: int, copied: bool = False) -> None:
        """Until a collector takes it (as a player retries); then its copy to serve."""
        nonlocal sent
        for _ in range(200):
            same_minute_guard()
            answer = report(urls[sent % len(urls)], keys[index], request)
            sent += 1
            if answer.status == 204:
                if not copied:
                    to_serve(request, index)
                return
            assert answer.status in (0, 503), answer
            time.sleep(0.05)
        raise AssertionError("a report was never accepted")

    # Before: every report taken. The outage starts no later than 45 s into a minute, so
    # that reports a collector held when the shard stopped (counted at their arrival once
    # it returns) are in the same minute as their copies to serve.
    while True:
        request = next(traffic)
        to_cluster(request, request.session % ACCOUNTS)
        if sent >= 60 and time.time() % 60 < 45:
            break
    pid = cluster.aggregators[1].proc.pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        while time.monotonic() - stopped < OUTAGE_SECONDS:
            request = next(traffic)
            index = request.session % ACCOUNTS
            same_minute_guard()
            answer = report(urls[sent % len(urls)], keys[index], request)
            sent += 1
            answers[index].append(answer)
            if answer.status == 204:
                to_serve(request, index)
            elif answer.status == 503 and "in time" in answer.detail:
                # Held by its collector past the wait for the acknowledgement: the shard
                # counts it when it is back, at its arrival; the player's retry is a repeat.
                to_serve(request, index)
                retries.append((request, index, True))
            else:
                retries.append((request, index, False))
            time.sleep(0.05)  # players keep their pace
    finally:
        os.kill(pid, signal.SIGCONT)
    away = time.monotonic() - stopped
    assert OUTAGE_SECONDS <= away < OUTAGE_SECONDS + 5
    for index in range(ACCOUNTS // 2):  # shard 0's accounts: untouched
        assert answers[index]
        assert all(a.status == 204 for a in answers[index]), answers[index]
    for index in range(ACCOUNTS // 2, ACCOUNTS):  # shard 1's: 503, and when to come back
        assert len(answers[index]) > 20
        assert all(a.status == 503 and a.retry_after for a in answers[index]), answers[index]

    # After: what the collectors held reaches the shard first; then the players' retries
    # and the rest of the traffic.
    cluster.drained()
    for request, index, copied in retries:
        to_cluster(request, index, copied)
    for request in traffic:
        to_cluster(request, request.session % ACCOUNTS)
    cluster.drained()
    flush(single.url)
    flush(cluster.aggregators[0].url)  # flushes every shard
    # Reports held by different collectors reach the shard in any order among themselves:
    # when two were of one session, sums that depend on the order of a session's events
    # (bitrate-seconds) may differ, so only what counts events and viewers is compared.
    held = [request.session for request, _, copied in retries if copied]
    reordered = len(set(held)) < len(held)
    compared = 0
    for i, (a, c) in enumerate(zip(alone, clustered, strict=True)):
        expected = (single.url, str(a["api_token"]))
        actual = (cluster.aggregators[0].url, str(c["api_token"]))
        if i >= ACCOUNTS // 2 and reordered:
            got, want = counted_once(export(*actual)), counted_once(export(*expected))
            assert got == want
            compared += len(want)
        else:  # every exported row, every stats row of each granularity and breakdown
            compared += assert_same_numbers(expected, actual)
    assert compared > 50


def test_every_collector_serves_one_key_set_and_opens_what_it_sealed(cluster: Cluster) -> None:
    bodies = {cluster.collect[i].get("/v1/keys")[1] for i in range(len(cluster.collect))}
    assert len(bodies) == 1  # one key set (the shared keys/ folder), whichever collector
    [config] = decode_ohttp_keys(bodies.pop())[:1]
    account = create_account(cluster.aggregators[0].url, "sealed")
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while not known_everywhere(cluster, str(account["embed_key"])):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for n, proc in enumerate(cluster.collect):
        line = f'e=ps,sid="sealed-{n}",sn=0,sta=p,ts=1700000000000,v=2\n'.encode()
        status, raw = http_call(
            "POST", f"{proc.url}/v1/r/{account['embed_key']}",
            seal_independently(line, config),
            {"Content-Type": "application/vnd.streamtally.sealed", "User-Agent": CHROME_UA},
        )  # fmt: skip
        assert status == 204, raw


@pytest.fixture
def own_cluster(
    clickhouse_server: ClickHouseProcess, tmp_path: Path
) -> Iterator[tuple[Cluster, ChDatabase]]:
    """A cluster on a database of its own: the purge below is timed on a store that only
    holds what this test wrote (and the shared cluster's minutes are not flushed by it)."""
    db = make_db(clickhouse_server, f"lifecycle_{uuid.uuid4().hex[:8]}")
    running = Cluster(db, tmp_path)
    try:
        running.start()
        yield running, db
    finally:
        running.stop()


def test_account_changes_reach_every_node_within_five_seconds(
    own_cluster: tuple[Cluster, ChDatabase],
) -> None:
    cluster, cluster_db = own_cluster
    # Created on one aggregator: every collector takes its reports within 5 s.
    started = time.monotonic()
    account = create_account(cluster.aggregators[1].url, "lifecycle")
    embed_key, token = str(account["embed_key"]), str(account["api_token"])
    account_id = str(account["account_id"])
    while not known_everywhere(cluster, embed_key):
        assert time.monotonic() - started < PROPAGATION_SECONDS
        time.sleep(0.05)

    # ... and every aggregator knows it within 5 s too.
    while True:
        status, raw = http_call(
            "GET", f"{cluster.aggregators[0].url}/v1/admin/accounts/{account_id}/tokens",
            None, ADMIN,
        )  # fmt: skip
        if status == 200:
            break
        assert time.monotonic() - started < PROPAGATION_SECONDS, raw
        time.sleep(0.05)

    # A token revoked on one aggregator: 401 on every aggregator within 5 s.
    tokens = json.loads(raw)
    token_id = (tokens["tokens"] if isinstance(tokens, dict) else tokens)[0]["token_id"]
    started = time.monotonic()
    status, raw = http_call(
        "DELETE",
        f"{cluster.aggregators[0].url}/v1/admin/accounts/{account_id}/tokens/{token_id}",
        None,
        ADMIN,
    )
    assert status == 200, raw
    for proc in cluster.aggregators:
        while True:
            status, _ = http_call(
                "GET", proc.url + "/v1/stats?granularity=day",
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            if status == 401:
                break
            assert time.monotonic() - started < PROPAGATION_SECONDS, status
            time.sleep(0.05)

    # Deleted on one aggregator while players keep sending to every collector: 410 from
    # each within 5 s, a receipt, and no row of it afterwards.
    answers: dict[str, float] = {}
    stop = threading.Event()
    deleting = [0.0]
    from benchmarks.traffic import Traffic, load_templates

    traffic = Traffic(load_templates(), concurrent=6, seed=5, start_ms=int(time.time() * 1000))

    def keep_sending() -> None:
        for n, request in enumerate(traffic):
            if stop.is_set():
                return
            proc = cluster.collect[n % len(cluster.collect)]
            status = post(proc.url, embed_key, request)
            if status == 410 and deleting[0] and proc.url not in answers:
                answers[proc.url] = time.monotonic() - deleting[0]
            time.sleep(0.01)

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    time.sleep(1.0)
    deleting[0] = time.monotonic()
    request = urllib.request.Request(
        f"{cluster.aggregators[0].url}/v1/admin/accounts/{account_id}",
        method="DELETE",
        headers=ADMIN,
    )
    with urllib.request.urlopen(request, timeout=240) as resp:  # the purge waits for parts
        status, raw = resp.status, resp.read()
    assert status == 200, raw
    assert json.loads(raw)["verified_zero"] is True
    time.sleep(1.0)
    stop.set()
    sender.join(10)
    assert set(answers) == {c.url for c in cluster.collect}
    assert max(answers.values()) < PROPAGATION_SECONDS, answers
    flush(cluster.aggregators[0].url)
    client = clickhouse_connect.get_client(
        host=cluster_db.url.split("//")[1].split(":")[0],
        port=int(cluster_db.url.rsplit(":", 1)[1].rstrip("/")),
        database=cluster_db.database,
    )
    try:
        for table in ("cells", "api_tokens", "audit", "privacy_budget"):
            rows = client.query(
                f"SELECT count() FROM {table} WHERE account_id = {{a:String}}",
                parameters={"a": account_id},
            ).result_rows
            assert rows[0][0] == 0, table
    finally:
        client.close()
