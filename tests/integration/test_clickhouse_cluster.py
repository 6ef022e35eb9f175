"""StreamTally on a ClickHouse cluster (setting clickhouse_cluster), against a real server.

The test server (chdb-core's engine, tests/chserver.py) is given a one-node cluster: a
``<remote_servers>`` entry with one shard whose one replica is itself. It has no Keeper and
no distributed DDL worker (``ON CLUSTER`` answers "Replicated DDL queries are disabled",
a Replicated table "Can't create replicated table without ZooKeeper"), so the schema is
applied in its form without Keeper (``ClusterSchema(replicated=False)``): the same
``*_local`` tables, the same Distributed tables sharded by ``cityHash64(account_id)``, and
every read and write of the real service going through them; the purge reads every replica
through ``clusterAllReplicas``. The Keeper form is read by the server's own parser
(``formatQuery``) here and checked statically in tests/aggregator/storage/test_cluster_schema.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
import pytest
from aiohttp.test_utils import TestServer

from aggregator.app import RUNNER_OPTIONS, STORE, create_app
from aggregator.purge import get_purger
from aggregator.purge.cluster import ClusterPurger
from aggregator.storage.cluster_schema import ClusterSchema
from aggregator.storage.migrate import history_table_sql, load_migrations, migrate, statements_for
from aggregator.storage.store import Store
from tests.conftest import CLICKHOUSE_CLUSTER as CLUSTER
from tests.conftest import ChDatabase
from tests.integration.conftest import CHROME_UA, Running, make_configs

FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"


@pytest.fixture
def cluster_db(clickhouse_cluster_db: ChDatabase) -> ChDatabase:
    return clickhouse_cluster_db


def client_for(ch: ChDatabase) -> Any:
    host, port = ch.url.removeprefix("http://").split(":")
    return clickhouse_connect.get_client(host=host, port=int(port), database=ch.database)


def tables(client: Any, database: str) -> dict[str, str]:
    rows = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
        parameters={"db": database},
    ).result_rows
    return dict(rows)


@pytest.mark.usefixtures("without_keeper")
async def test_the_migrations_build_local_and_distributed_tables(cluster_db: ChDatabase) -> None:
    store = await Store.connect(
        url=cluster_db.url, data_dir=Path("/nonexistent"), database=cluster_db.database,
        cluster=CLUSTER,
    )  # fmt: skip
    try:
        assert await migrate(store) == [m.name for m in load_migrations()]
        assert await migrate(store) == []
    finally:
        await store.close()
    client = client_for(cluster_db)
    try:
        found = tables(client, cluster_db.database)
    finally:
        client.close()
    logical = {name for name in found if not name.endswith("_local")}
    assert {"accounts", "api_tokens", "cells", "audit", "purges", "privacy_budget"} <= logical
    assert "schema_migrations" in logical
    for name in logical:
        assert found[name + "_local"].split(" ")[0].split("(")[0].endswith("MergeTree"), name
        key = "cityHash64(version)" if name == "schema_migrations" else "cityHash64(account_id)"
        assert found[name] == (
            f"Distributed('{CLUSTER}', '{cluster_db.database}', '{name}_local', {key})"
        )


def report(stream: str, sid: str, sn: int = 0) -> str:
    return (
        f'cid="{stream}",e=ps,sid="{sid}",sn={sn},sta=s,ts={1795480000000 + sn},v=2\n'
        f'cid="{stream}",e=ps,sid="{sid}",sn={sn + 1},sta=p,ts={1795480000400 + sn},msd=400,v=2\n'
    )


@asynccontextmanager
async def started(
    data_dir: Path, ch: ChDatabase, now: float, **settings: Any
) -> AsyncIterator[Running]:
    app = await create_app(*make_configs(data_dir, ch, **settings), clock=lambda: now)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    try:
        async with aiohttp.ClientSession() as http:
            yield Running(str(server.make_url("")).rstrip("/"), app, http, data_dir, ch)
    finally:
        await server.close()


async def traffic(running: Running) -> list[dict[str, Any]]:
    """Two accounts fed 3 and 4 viewers, flushed; the accounts."""
    accounts = [await running.create_account(name=f"Publisher {n}") for n in "AB"]
    for n, account in enumerate(accounts):
        for i in range(3 + n):
            resp = await running.post(
                account["embed_key"],
                report(f"stream-{n}", f"s{n}-{i}"),
                ip=f"198.51.100.{10 + i}",
                ua=CHROME_UA if i % 2 else FIREFOX_UA,
            )
            assert resp.status == 204
    assert (await running.flush())["rows"] > 0
    return accounts


async def readings(running: Running, account: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for granularity in ("minute", "hour", "day"):
        stats = await running.stats(account["api_token"], granularity=granularity)
        out[granularity] = stats["rows"]
    return out


@pytest.mark.usefixtures("without_keeper")
async def test_the_service_counts_and_purges_alike_on_one_server_and_on_the_cluster(
    tmp_path: Path, ch_database: ChDatabase, cluster_db: ChDatabase
) -> None:
    now = time.time()
    async with started(tmp_path / "single", ch_database, now) as single:
        expected = [await readings(single, a) for a in await traffic(single)]
    async with started(tmp_path / "cluster", cluster_db, now, clickhouse_cluster=CLUSTER) as on:
        assert on.app[STORE].cluster is not None
        accounts = await traffic(on)
        got = [await readings(on, a) for a in accounts]
        assert got == expected
        assert all(r["minute"] for r in got)

        purger = get_purger(on.app)
        assert isinstance(purger, ClusterPurger)
        gone, kept = accounts
        client = client_for(cluster_db)
        try:
            local = sorted(t for t in tables(client, cluster_db.database) if t.endswith("_local"))

            def rows_of(account_id: str) -> dict[str, int]:
                return {
                    t: client.query(
                        f"SELECT count() FROM clusterAllReplicas({CLUSTER}, "
                        f"{cluster_db.database}, `{t}`) WHERE account_id = {{a:String}} "
                        "SETTINGS apply_deleted_mask = 0",
                        parameters={"a": account_id},
                    ).result_rows[0][0]
                    for t in local
                    if t != "schema_migrations_local"
                }

            before_gone = rows_of(gone["account_id"])
            before_kept = rows_of(kept["account_id"])
            assert before_gone["cells_local"] > 0
            assert before_gone["audit_local"] > 0

            resp = await on.http.delete(
                on.url + "/v1/account",
                headers={"Authorization": f"Bearer {gone['api_token']}"},
            )
            assert resp.status == 200, await resp.text()
            receipt = await resp.json()
            assert receipt["verified_zero"] is True
            assert {"accounts", "api_tokens", "audit", "cells"} <= set(receipt["tables"])
            assert not any(t.endswith("_local") for t in receipt["tables"])
            assert receipt["rows_deleted"]["cells"] == before_gone["cells_local"]

            after = rows_of(gone["account_id"])
            assert after["accounts_local"] == 1  # the tombstone
            assert after["purges_local"] == 2  # running, done: the receipt
            assert all(
                n == 0 for t, n in after.items() if t not in ("accounts_local", "purges_local")
            ), after
            assert rows_of(kept["account_id"]) == before_kept
        finally:
            client.close()
        assert await readings(on, kept) == expected[1]


async def test_the_keeper_form_parses_with_the_real_clickhouse_parser(
    ch_database: ChDatabase, tmp_path: Path
) -> None:
    """The Keeper form cannot run here; ClickHouse's own parser (formatQuery) still reads
    every statement of it, and keeps its ON CLUSTER, engine and Keeper path."""
    schema = ClusterSchema(CLUSTER, ch_database.database)
    statements = history_table_sql(schema) + [
        sql for m in load_migrations() for sql in statements_for(m.statements, schema)
    ]
    store = await Store.connect(
        url=ch_database.url, data_dir=tmp_path, database=ch_database.database
    )
    try:
        for sql in statements:
            [(formatted,)] = await store.query_rows("SELECT formatQuery({q:String})", {"q": sql})
            assert f"ON CLUSTER {CLUSTER}" in formatted, formatted
            if " ENGINE = Replicated" in sql:
                assert "'/clickhouse/tables/{shard}/{database}/" in formatted
    finally:
        await store.close()
