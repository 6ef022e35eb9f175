"""Nothing of a purged account is left on disk once its receipt is given (issue 10, finding 7).

The attack: with read access to the disk right after the purge receipt, look for the account's
name, origin, embed key, stream names and player error codes in every file ClickHouse keeps
(its data dir: active and outdated parts, mutation files, metadata, system tables) and in the
service's data dir (spool, keys). The scan (``tests/diskscan.py``) reads every file's raw bytes
and, for ClickHouse compressed files, the decompressed bytes too; it cannot see freed disk
blocks, memory, or files outside the scanned folders. A second account's values must still be
found by the same scan: the scan can see what it looks for. And through ClickHouse: no active
part holds a row of the account, and no outdated or detached part older than the purge is left.

Both stores: a private ClickHouse HTTP server (the integration path; its data dir is the
fixture's) and the embedded chDB store (``data_dir/clickhouse``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
from aiohttp.test_utils import TestServer

from aggregator.app import RUNNER_OPTIONS, create_app
from aggregator.service import SERVICE
from tests.chserver import ClickHouseProcess
from tests.conftest import ChDatabase
from tests.diskscan import scan
from tests.integration.conftest import CHROME_UA, Running, make_configs

FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"

GONE = {
    "name": "Canary Zq7w Publishing Ltd",
    "origin": "https://canary-zq7w.example",
    "streams": ("canary-zq7w-stream-alpha", "canary-zq7w-stream-beta"),
    "codes": ("manifestLoadError", "levelLoadTimeOut"),  # real hls.js error details
}
KEPT = {
    "name": "Control Kp4v Media",
    "origin": "https://control-kp4v.example",
    "streams": ("control-kp4v-stream",),
    "codes": ("fragLoadError",),
}


def lines(stream: str, sid: str, code: str, start_ms: int) -> str:
    """A start, some playing, then a fatal error with ``code``."""
    return "".join(
        f'cid="{stream}",e={e},{extra}sid="{sid}",sn={sn},sta={sta},ts={start_ms + ms},v=2\n'
        for sn, (e, sta, ms, extra) in enumerate(
            [
                ("ps", "s", 0, ""),
                ("ps", "p", 400, "msd=400,"),
                ("t", "p", 10400, "br=(3000),"),
                ("e", "f", 10500, f'ec=("{code}"),'),
            ]
        )
    )


async def feed(running: Running, account: dict[str, Any], values: dict[str, Any]) -> None:
    """Three viewers (distinct IPs) per stream and code: every cell passes k=2."""
    now_ms = int(time.time() * 1000)
    for s, stream in enumerate(values["streams"]):
        for c, code in enumerate(values["codes"]):
            for i in range(3):
                resp = await running.post(
                    account["embed_key"],
                    lines(stream, f"{stream}-{c}-{i}", code, now_ms),
                    ip=f"198.51.{100 + s}.{10 + 3 * c + i}",
                    ua=CHROME_UA if i % 2 else FIREFOX_UA,
                    origin=values["origin"],
                )
                assert resp.status == 204, await resp.text()


def needles(account: dict[str, Any], values: dict[str, Any]) -> list[str]:
    return [
        values["name"],
        values["origin"].removeprefix("https://"),
        account["embed_key"],
        *values["streams"],
        *values["codes"],
    ]


@asynccontextmanager
async def serving(data_dir: Path, ch: ChDatabase, **overrides: Any) -> AsyncIterator[Running]:
    app = await create_app(*make_configs(data_dir, ch, **overrides))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    try:
        async with aiohttp.ClientSession() as http:
            yield Running(str(server.make_url("")).rstrip("/"), app, http, data_dir, ch)
    finally:
        await server.close()


async def play_and_delete(running: Running, ch_dirs: list[Path]) -> dict[str, Any]:
    """Both accounts play; the canary account is deleted; the scan right after the receipt."""
    gone = await running.create_account(name=GONE["name"], origins=(GONE["origin"],))
    kept = await running.create_account(name=KEPT["name"], origins=(KEPT["origin"],))
    await feed(running, gone, GONE)
    await feed(running, kept, KEPT)
    flushed = await running.flush()
    assert flushed["rows"] > 0
    roots = [*ch_dirs, running.data_dir]
    before = scan(roots, needles(gone, GONE))
    assert {n: bool(f) for n, f in before.found.items()} == dict.fromkeys(before.found, True)

    began = time.monotonic()
    resp = await running.http.delete(
        running.url + "/v1/account", headers={"Authorization": f"Bearer {gone['api_token']}"}
    )
    assert resp.status == 200, await resp.text()
    receipt: dict[str, Any] = await resp.json()
    assert time.monotonic() - began < 130  # PARTS_WAIT_SECONDS, and the rest
    after = scan(roots, needles(gone, GONE))
    control = scan(roots, needles(kept, KEPT))

    assert receipt["verified_zero"] is True
    left = {n: f for n, f in after.found.items() if f}
    assert left == {}, "\n".join(f"{n}: {' '.join(sorted(f))}" for n, f in left.items())
    assert all(control.found.values()), {n: bool(f) for n, f in control.found.items()}
    return receipt


def check_receipt(receipt: dict[str, Any]) -> None:
    checked = receipt["checked"]
    for table in receipt["tables"]:
        assert checked[table] == {
            "rows_left": 0,
            "outdated_parts_left": 0,
            "detached_parts": 0,
        }, table


def check_parts(client: Any, database: str, account_id: str) -> None:
    """Through ClickHouse: no part older than the purge's mutation is left, active or not."""
    mutated = client.query(
        "SELECT table, arrayMin(block_numbers.number) FROM system.mutations "
        "WHERE database = {db:String} AND position(command, {a:String}) > 0",
        parameters={"db": database, "a": account_id},
    ).result_rows
    assert {t for t, _ in mutated} >= {"accounts", "api_tokens", "cells", "audit"}
    for table, block in mutated:
        assert client.query(
            "SELECT count() FROM system.parts WHERE database = {db:String} "
            "AND table = {t:String} AND data_version < {v:UInt64}",
            parameters={"db": database, "t": table, "v": block},
        ).result_rows == [(0,)], table


async def test_nothing_of_the_account_is_on_the_servers_disk_after_the_receipt(
    tmp_path: Path, clickhouse_process_factory: Callable[[], ClickHouseProcess]
) -> None:
    server = clickhouse_process_factory()
    client = clickhouse_connect.get_client(host=server.host, port=server.port)
    try:
        client.command("CREATE DATABASE canary")
        ch = ChDatabase(server.url, "canary")
        async with serving(tmp_path / "data", ch) as running:
            receipt = await play_and_delete(running, [server.data_dir, server.log])
        check_receipt(receipt)
        check_parts(client, "canary", receipt["account_id"])
    finally:
        client.close()


async def test_nothing_of_the_account_is_in_the_embedded_store_after_the_receipt(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    ch = ChDatabase("", "streamtally")
    async with serving(data_dir, ch, clickhouse_url=None) as running:
        receipt = await play_and_delete(running, [])  # data_dir/clickhouse is in data_dir
        store = running.app[SERVICE].store
        older = await store.query_rows(
            "SELECT p.table, count() FROM system.parts AS p INNER JOIN ("
            "SELECT table, max(arrayMin(block_numbers.number)) AS block FROM system.mutations "
            "WHERE database = currentDatabase() AND position(command, {a:String}) > 0 "
            "GROUP BY table) AS m ON m.table = p.table "
            "WHERE p.database = currentDatabase() AND p.data_version < m.block GROUP BY p.table",
            {"a": receipt["account_id"]},
        )
        assert older == []
    check_receipt(receipt)
