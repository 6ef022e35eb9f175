"""Account deletion (issue 5.4, privacy invariant 4) against the real ClickHouse HTTP server.

Three accounts with data; one is deleted: its receipt says verified; no row of it is left in
any table or active part; the other two are unchanged to the row; its embed key gets 410 and
its token 401. An interrupted purge is finished by the next start.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
import pytest
from aiohttp.test_utils import TestServer

from aggregator.app import RUNNER_OPTIONS, create_app
from aggregator.purge import get_purger
from tests.conftest import ChDatabase
from tests.integration.conftest import CHROME_UA, Running, make_configs

FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"


def report(stream: str, sid: str, sn: int = 0) -> str:
    return (
        f'cid="{stream}",e=ps,sid="{sid}",sn={sn},sta=s,ts={1795480000000 + sn},v=2\n'
        f'cid="{stream}",e=ps,sid="{sid}",sn={sn + 1},sta=p,ts={1795480000400 + sn},msd=400,v=2\n'
    )


async def feed(running: Running, account: dict[str, Any], stream: str, viewers: int = 3) -> None:
    """Reports of ``viewers`` distinct viewers (distinct IPs): enough for cells of k=2."""
    for i in range(viewers):
        resp = await running.post(
            account["embed_key"],
            report(stream, f"{stream}-{i}"),
            ip=f"198.51.100.{10 + i}",
            ua=CHROME_UA if i % 2 else FIREFOX_UA,
        )
        assert resp.status == 204


def ch_client(ch: ChDatabase) -> Any:
    host, port = ch.url.removeprefix("http://").split(":")
    return clickhouse_connect.get_client(host=host, port=int(port), database=ch.database)


def account_tables(client: Any, database: str) -> dict[str, str]:
    """Every table of the database with an account_id column, and its engine."""
    rows = client.query(
        "SELECT c.table, t.engine FROM system.columns c JOIN system.tables t "
        "ON t.database = c.database AND t.name = c.table "
        "WHERE c.database = {db:String} AND c.name = 'account_id'",
        parameters={"db": database},
    ).result_rows
    return {table: engine for table, engine in rows}


def dump(client: Any, database: str, account_ids: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """All rows of these accounts in every table, in a fixed order (FINAL where it applies)."""
    out = {}
    for table, engine in sorted(account_tables(client, database).items()):
        final = " FINAL" if engine.startswith("Replacing") else ""
        out[table] = client.query(
            f"SELECT * FROM `{table}`{final} WHERE account_id IN {{ids:Array(String)}} "
            "ORDER BY ALL",
            parameters={"ids": account_ids},
        ).result_rows
    return out


async def status_of(running: Running, method: str, path: str, token: str) -> int:
    resp = await running.http.request(
        method, running.url + path, headers={"Authorization": f"Bearer {token}"}
    )
    await resp.read()
    return resp.status


async def test_deleting_one_of_three_accounts_purges_it_and_only_it(running: Running) -> None:
    accounts = [await running.create_account(name=f"Publisher {n}") for n in "ABC"]
    for n, account in enumerate(accounts):
        await feed(running, account, f"stream-{n}")
    flushed = await running.flush()
    assert flushed["rows"] > 0
    for account in accounts:  # each has cells, a second token and audit rows
        assert (await running.stats(account["api_token"], granularity="hour"))["rows"]
        resp = await running.admin("POST", f"/v1/admin/accounts/{account['account_id']}/tokens")
        assert resp.status == 201
    gone, kept = accounts[1], [accounts[0], accounts[2]]
    kept_ids = [a["account_id"] for a in kept]
    client = ch_client(running.ch)
    try:
        before_gone = dump(client, running.ch.database, [gone["account_id"]])
        assert before_gone["cells"]
        assert before_gone["api_tokens"]
        assert before_gone["audit"]
        before = dump(client, running.ch.database, kept_ids)
        counts_before = {
            table: client.query(
                f"SELECT count() FROM `{table}` WHERE account_id = {{a:String}}",
                parameters={"a": gone["account_id"]},
            ).result_rows[0][0]
            for table in ("cells", "audit")
        }

        resp = await running.http.delete(
            running.url + "/v1/account",
            headers={"Authorization": f"Bearer {gone['api_token']}"},
        )
        assert resp.status == 200, await resp.text()
        receipt = await resp.json()

        assert receipt["account_id"] == gone["account_id"]
        assert receipt["verified_zero"] is True
        tables = account_tables(client, running.ch.database)
        assert set(receipt["tables"]) == set(tables) - {"purges"}
        assert {"accounts", "api_tokens", "audit", "cells"} <= set(receipt["tables"])
        for table, count in counts_before.items():
            assert receipt["rows_deleted"][table] == count > 0, table
        assert receipt["rows_deleted"]["api_tokens"] == 4  # 2 tokens, and a revoked version each
        assert (
            receipt["rows_deleted"]["accounts"] == 2
        )  # created, marked deleted; not the tombstone
        datetime.fromisoformat(receipt["finished_at"])

        # No row of it in any table, physically, lightweight-deleted rows included ...
        for table in tables:
            if table == "purges":
                continue
            rows = client.query(
                f"SELECT * FROM `{table}` WHERE account_id = {{a:String}} "
                "SETTINGS apply_deleted_mask = 0",
                parameters={"a": gone["account_id"]},
            ).result_rows
            if table == "accounts":  # the tombstone: id, deleted, hash of the embed key
                assert len(rows) == 1
                cols = client.query("SELECT * FROM accounts LIMIT 0").column_names
                stone = dict(zip(cols, rows[0], strict=True))
                assert stone["deleted"] == 1
                assert stone["name"] == ""
                assert stone["origins"] == []
                assert stone["embed_key"].startswith("sha256:")
            else:
                assert rows == [], table
        # ... nor in any active part older than the purge's mutation ...
        for table in ("cells", "api_tokens", "audit"):
            [(version,)] = client.query(
                "SELECT arrayMin(block_numbers.number) FROM system.mutations "
                "WHERE database = {db:String} AND table = {t:String} AND is_done "
                "AND position(command, {a:String}) > 0",
                parameters={"db": running.ch.database, "t": table, "a": gone["account_id"]},
            ).result_rows
            stale = client.query(
                "SELECT count() FROM system.parts WHERE database = {db:String} "
                "AND table = {t:String} AND active AND data_version < {v:UInt64}",
                parameters={"db": running.ch.database, "t": table, "v": version},
            ).result_rows
            assert stale == [(0,)], table
        # ... and its name and embed key are nowhere in the database.
        everything = b"".join(
            client.raw_query(f"SELECT * FROM `{t}` FORMAT TSV")
            for (t,) in client.query("SHOW TABLES").result_rows
        )
        assert gone["embed_key"].encode() not in everything
        assert gone["name"].encode() not in everything
        assert gone["api_token"].encode() not in everything

        assert dump(client, running.ch.database, kept_ids) == before  # the others, to the row
        [(state, stored_receipt)] = client.query(
            "SELECT state, receipt FROM purges FINAL WHERE account_id = {a:String}",
            parameters={"a": gone["account_id"]},
        ).result_rows
        assert state == "done"
        assert json.loads(stored_receipt) == receipt
    finally:
        client.close()

    assert (await running.post(gone["embed_key"], report("stream-1", "late"))).status == 410
    assert await status_of(running, "GET", "/v1/stats", gone["api_token"]) == 401
    assert await status_of(running, "DELETE", "/v1/account", gone["api_token"]) == 401
    for account in kept:
        assert (await running.post(account["embed_key"], report("x", "new"))).status == 204
        assert (await running.stats(account["api_token"], granularity="hour"))["rows"]
    # Deleting again (admin) answers the same receipt; the account lists as a tombstone.
    again = await running.admin("DELETE", f"/v1/admin/accounts/{gone['account_id']}")
    assert again.status == 200
    assert await again.json() == receipt
    listing = await (await running.admin("GET", "/v1/admin/accounts")).json()
    [stone] = [a for a in listing["accounts"] if a["account_id"] == gone["account_id"]]
    assert stone["deleted"]
    assert stone["name"] == ""
    assert stone["embed_key"] is None


async def test_admin_deletes_an_account_and_state_in_memory_goes(running: Running) -> None:
    account = await running.create_account()
    await feed(running, account, "live-stream")  # open sessions and cells, not flushed
    resp = await running.admin("DELETE", f"/v1/admin/accounts/{account['account_id']}")
    assert resp.status == 200
    receipt = await resp.json()
    assert receipt["verified_zero"] is True
    flushed = await running.flush()  # nothing of it is left in memory to write
    assert flushed["rows"] == 0
    client = ch_client(running.ch)
    try:
        assert client.query(
            "SELECT count() FROM cells WHERE account_id = {a:String}",
            parameters={"a": account["account_id"]},
        ).result_rows == [(0,)]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("DELETE", "/v1/admin/accounts/acc_0000000000000000", 404, id="unknown"),
        pytest.param("DELETE", "/v1/admin/accounts/{id}", 401, id="no-admin-token"),
        pytest.param("DELETE", "/v1/account", 401, id="no-api-token"),
    ],
)
async def test_deletion_refusals(running: Running, method: str, path: str, status: int) -> None:
    account = await running.create_account()
    url = running.url + path.replace("{id}", account["account_id"])
    if status == 404:
        resp = await running.admin(method, path)
    else:
        resp = await running.http.request(method, url)
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert (await running.post(account["embed_key"], report("s", "a"))).status == 204


# ---- an interrupted purge is finished by the next start ---------------------------------------


@asynccontextmanager
async def started(data_dir: Path, ch: ChDatabase) -> AsyncIterator[Running]:
    app = await create_app(*make_configs(data_dir, ch))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    try:
        async with aiohttp.ClientSession() as http:
            yield Running(str(server.make_url("")).rstrip("/"), app, http, data_dir, ch)
    finally:
        await server.close()


@pytest.mark.parametrize(
    "interrupted_after",
    [
        pytest.param("begin", id="after-the-purge-row"),
        pytest.param("stop", id="after-410-and-tombstone"),
        pytest.param("cells", id="after-one-table"),
    ],
)
async def test_interrupted_purge_resumes_at_the_next_start(
    tmp_path: Path, ch_database: ChDatabase, interrupted_after: str
) -> None:
    data_dir = tmp_path / "data"
    async with started(data_dir, ch_database) as first:
        gone = await first.create_account(name="Gone")
        kept = await first.create_account(name="Kept")
        await feed(first, gone, "g")
        await feed(first, kept, "k")
        await first.flush()
        purger = get_purger(first.app)
        await purger._begin(gone["account_id"], "admin")
        if interrupted_after in ("stop", "cells"):
            await purger.stop_account(gone["account_id"])
        if interrupted_after == "cells":
            assert await purger.purge_table("cells", gone["account_id"]) > 0
        # ... and the process dies here.
    client = ch_client(ch_database)
    try:
        assert client.query(
            "SELECT state FROM purges FINAL WHERE account_id = {a:String}",
            parameters={"a": gone["account_id"]},
        ).result_rows == [("running",)]
        kept_before = dump(client, ch_database.database, [kept["account_id"]])
        async with started(data_dir, ch_database) as second:
            # Finished before the first request is served:
            [(state, receipt)] = client.query(
                "SELECT state, receipt FROM purges FINAL WHERE account_id = {a:String}",
                parameters={"a": gone["account_id"]},
            ).result_rows
            assert state == "done"
            assert '"verified_zero":true' in receipt
            assert (await second.post(gone["embed_key"], report("g", "late"))).status == 410
            assert await status_of(second, "GET", "/v1/stats", gone["api_token"]) == 401
            assert await status_of(second, "GET", "/v1/stats", kept["api_token"]) == 200
        for table in account_tables(client, ch_database.database):
            if table in ("purges", "accounts"):
                continue
            assert client.query(
                f"SELECT count() FROM `{table}` WHERE account_id = {{a:String}}",
                parameters={"a": gone["account_id"]},
            ).result_rows == [(0,)], table
        after = dump(client, ch_database.database, [kept["account_id"]])
        assert after["cells"] == kept_before["cells"]
        assert after["api_tokens"] == kept_before["api_tokens"]
    finally:
        client.close()


def purges_total(metrics: str, outcome: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'streamtally_purges_total{{outcome="{outcome}"}} '):
            return float(line.split()[-1])
    raise AssertionError(f"no streamtally_purges_total{{outcome={outcome!r}}} in /metrics")


async def test_purges_done_and_failed_are_counted_on_the_operator_metrics(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alert "purge failed" (deploy/prometheus/alerts.yml) needs a purge outcome counter."""
    done_before = purges_total(await running.metrics(), "done")
    failed_before = purges_total(await running.metrics(), "failed")
    ok, stuck = [await running.create_account(name=n) for n in ("Ok", "Stuck")]
    await feed(running, ok, "ok")
    await running.flush()
    resp = await running.admin("DELETE", f"/v1/admin/accounts/{ok['account_id']}")
    assert resp.status == 200, await resp.text()

    async def rows_left(table: str, account_id: str) -> int:
        return 1  # as if a write raced every round of the purge

    monkeypatch.setattr(get_purger(running.app), "verify_table", rows_left)
    resp = await running.admin("DELETE", f"/v1/admin/accounts/{stuck['account_id']}")
    assert resp.status >= 500
    metrics = await running.metrics()
    assert purges_total(metrics, "done") == done_before + 1
    assert purges_total(metrics, "failed") == failed_before + 1
