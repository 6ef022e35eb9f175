"""Faults: ClickHouse down under load, SIGKILL while spooling, SIGTERM under load.

Each test runs its own ClickHouse server (stopped and started by the test) and stays on
loopback; every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clickhouse_connect

from aggregator.service import SERVICE, WRITE_COLUMNS
from aggregator.storage.spool import decode_record
from tests.chserver import ClickHouseProcess
from tests.conftest import ChDatabase
from tests.integration.conftest import ADMIN_TOKEN, Running, make_configs
from tests.integration.serveproc import ServeProcess

CANARY_UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36 FaultCanary/1.0"


def line(sid: str, sn: int = 0, sta: str = "p") -> bytes:
    return (
        f'cid="stream-42",e=ps,sid="{sid}",sn={sn},sta={sta},ts={1795480000000 + sn},v=2\n'.encode()
    )


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}


def create_account(url: str, k: int = 2) -> dict[str, Any]:
    status, raw = http(
        "POST", url + "/v1/admin/accounts",
        json.dumps({"name": "faults", "origins": ["*"], "k": k}).encode(), ADMIN,
    )  # fmt: skip
    assert status == 201, raw
    result: dict[str, Any] = json.loads(raw)
    return result


def report(url: str, embed_key: str, body: bytes, ip: str) -> int:
    try:
        status, _ = http(
            "POST", f"{url}/v1/r/{embed_key}", body,
            {"Content-Type": "application/cmcd", "X-Forwarded-For": ip, "User-Agent": CANARY_UA},
        )  # fmt: skip
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0  # the server is gone (shutdown): not accepted
    return status


def cells(
    ch: ClickHouseProcess, database: str, account_id: str, final: bool = True
) -> list[tuple[Any, ...]]:
    client = clickhouse_connect.get_client(host=ch.host, port=ch.port, database=database)
    try:
        return list(
            client.query(
                "SELECT granularity, window_start, breakdown, value, part, version, views, "
                "unique_viewers FROM cells "
                + ("FINAL " if final else "")
                + "WHERE account_id = {a:String} AND breakdown = ''",
                parameters={"a": account_id},
            ).result_rows
        )
    finally:
        client.close()


def views_by_granularity(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for granularity, *_rest, views, _viewers in rows:
        out[granularity] = out.get(granularity, 0) + views
    return out


def make_db(ch: ClickHouseProcess, name: str = "streamtally") -> ChDatabase:
    client = clickhouse_connect.get_client(host=ch.host, port=ch.port)
    client.command(f"CREATE DATABASE IF NOT EXISTS {name}")
    client.close()
    return ChDatabase(ch.url, name)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


async def test_clickhouse_down_under_load_then_back_every_row_once(
    tmp_path: Path, clickhouse_process_factory: Callable[[], ClickHouseProcess]
) -> None:
    import aiohttp
    from aiohttp.test_utils import TestServer

    from aggregator.app import RUNNER_OPTIONS, create_app

    ch = clickhouse_process_factory()
    db = make_db(ch)
    collector_config, aggregator_config = make_configs(tmp_path / "data", db)
    app = await create_app(collector_config, aggregator_config)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    try:
        async with aiohttp.ClientSession() as session:
            running = Running(str(server.make_url("")).rstrip("/"), app, session, tmp_path, db)
            account = await running.create_account(k=2)
            for i in range(10):
                resp = await running.post(account["embed_key"], line(f"s{i}"), ip=f"8.8.{i}.1")
                assert resp.status == 204
            assert (await running.flush())["spooled"] == 0
            ch.stop()
            for i in range(10, 30):  # load while ClickHouse is down
                resp = await running.post(account["embed_key"], line(f"s{i}"), ip=f"8.8.{i}.1")
                assert resp.status == 204
                if i % 5 == 4:  # every minute flushed holds 5 viewers (>= k)
                    assert (await running.flush())["spooled"] > 0
            health = await running.http.get(running.url + "/healthz")
            assert (await health.json())["clickhouse"] == "down"
            ch.start()
            spool = app[SERVICE].spool
            for _ in range(150):  # replayed in the background within 30 s
                if not len(spool):
                    break
                await asyncio.sleep(0.2)
            assert len(spool) == 0
            assert (await running.flush())["spooled"] == 0
    finally:
        await server.close()
    rows = cells(ch, db.database, account["account_id"], final=False)
    keys = [(g, w, b, v, p, version) for g, w, b, v, p, version, _, _ in rows]
    assert len(keys) == len(set(keys)), "a batch was written twice"
    totals = views_by_granularity(cells(ch, db.database, account["account_id"]))
    assert totals == {"minute": 30, "hour": 30, "day": 30}


def test_sigkill_while_spooling_then_restart_replays_the_spool(
    tmp_path: Path, clickhouse_process_factory: Callable[[], ClickHouseProcess]
) -> None:
    ch = clickhouse_process_factory()
    db = make_db(ch)
    data_dir = tmp_path / "data"
    args = ("--clickhouse-url", db.url, "--database", db.database, "--admin-token", ADMIN_TOKEN,
            "--trusted-proxies", "127.0.0.1/32", "--flush-seconds", "3600")  # fmt: skip
    serve = ServeProcess(data_dir, *args)
    serve.start()
    try:
        account = create_account(serve.url, k=3)
        # 6 viewers (k=3 is met) and one lone viewer on another stream (below k)
        for i in range(6):
            assert report(serve.url, account["embed_key"], line(f"s{i}"), f"8.8.{i}.1") == 204
        lone = b'cid="lonely",e=ps,sid="lone",sn=0,sta=p,ts=1795480000000,v=2\n'
        assert report(serve.url, account["embed_key"], lone, "9.9.9.9") == 204
        ch.stop()
        status, raw = http("POST", serve.url + "/v1/admin/flush", b"", ADMIN)
        assert status == 200
        assert json.loads(raw)["spooled"] > 0
    finally:
        serve.stop(signal.SIGKILL)
    records = sorted((data_dir / "spool").glob("*.rec"))
    assert records, "nothing was spooled"
    for path in records:
        batch = decode_record(path.read_bytes())
        assert batch.columns == WRITE_COLUMNS  # aggregates only: no viewer-key column exists
        for row in batch.rows:
            values = dict(zip(batch.columns, row, strict=True))
            assert values["unique_viewers"] >= 3 or values["is_deleted"] == 1
            assert values["stream"] != "lonely"
        raw_bytes = path.read_bytes()
        assert b"FaultCanary" not in raw_bytes
        assert b"8.8.0.1" not in raw_bytes
    ch.start()
    serve = ServeProcess(data_dir, *args)
    serve.start()
    try:
        wait_for(lambda: not list((data_dir / "spool").glob("*.rec")))
    finally:
        assert serve.stop() == 0
    totals = views_by_granularity(cells(ch, db.database, account["account_id"]))
    assert totals == {"minute": 6, "hour": 6, "day": 6}


def test_sigterm_under_load_every_accepted_event_is_in_a_written_cell(
    tmp_path: Path, clickhouse_process_factory: Callable[[], ClickHouseProcess]
) -> None:
    ch = clickhouse_process_factory()
    db = make_db(ch)
    serve = ServeProcess(
        tmp_path / "data", "--clickhouse-url", db.url, "--database", db.database,
        "--admin-token", ADMIN_TOKEN, "--trusted-proxies", "127.0.0.1/32",
        "--flush-seconds", "3600",
    )  # fmt: skip
    serve.start()
    account = create_account(serve.url, k=2)
    accepted: list[int] = []
    stop = threading.Event()

    def sender(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            ip = f"10.{worker}.{n // 250}.{n % 250 + 1}"
            if report(serve.url, account["embed_key"], line(f"w{worker}-{n}"), ip) == 204:
                accepted.append(1)
            n += 1

    threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(accepted) >= 200, timeout=60)
    assert serve.stop(signal.SIGTERM) == 0  # drains in-flight requests, then a final flush
    stop.set()
    for t in threads:
        t.join(30)
    output = "".join(serve.output)
    assert "final flush" in output
    totals = views_by_granularity(cells(ch, db.database, account["account_id"]))
    assert totals["hour"] == len(accepted)
    assert totals["day"] == len(accepted)
    assert totals["minute"] == len(accepted)
