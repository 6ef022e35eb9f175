"""Privacy invariant 4 on a ClickHouse cluster: no row of an account waits anywhere a purge
cannot reach it.

The attack: in a cluster most shards are remote from the server an aggregator talks to, and
ClickHouse's default for an insert into a Distributed table bound for a remote shard is to
queue the block in the Distributed table's folder on the local disk and send it later. A
flush just before a purge leaves the account's cells there: the purge deletes and counts in
the shards' tables and finds nothing, writes its receipt, and the queued rows land after it.

The one-node test cluster is made to treat its shard as remote (``prefer_localhost_replica =
0``, the path every remote shard takes) and the queue is held (``SYSTEM STOP DISTRIBUTED
SENDS``), as a slow network would. Then a cells row is written through the store, the way
the writer does, and the attacker looks where the purge looks, in ClickHouse's queue, and at
the server's disk.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.storage.migrate import migrate
from aggregator.storage.store import Store
from tests.chserver import ClickHouseProcess
from tests.conftest import CLICKHOUSE_CLUSTER, ChDatabase
from tests.diskscan import scan


@pytest.mark.usefixtures("without_keeper")
async def test_a_flushed_row_is_in_the_shards_table_at_once_never_queued_on_disk(
    clickhouse_cluster_server: ClickHouseProcess, clickhouse_cluster_db: ChDatabase, tmp_path: Path
) -> None:
    db = clickhouse_cluster_db.database
    store = await Store.connect(
        url=clickhouse_cluster_db.url, data_dir=tmp_path, database=db, cluster=CLICKHOUSE_CLUSTER
    )
    try:
        await migrate(store)
        store._async.set_client_setting("prefer_localhost_replica", 0)  # the shard is remote
        await store.command("SYSTEM STOP DISTRIBUTED SENDS cells")  # a slow link to it
        account, canary = f"acc_{uuid.uuid4().hex}", f"canary-{uuid.uuid4().hex}"
        await store.insert(
            "cells",
            [
                [
                    account,
                    canary,
                    "minute",
                    datetime.now(UTC).replace(second=0, microsecond=0),
                    1,
                    30,
                ]
            ],
            # retention_days: with the column's default of 0 the row is past its TTL at once,
            # and a TTL merge may remove it before the attacker looks
            column_names=[
                "account_id",
                "stream",
                "granularity",
                "window_start",
                "version",
                "retention_days",
            ],
        )

        # Where the purge deletes and counts: every replica's cells_local.
        seen_by_purge = await store.query_rows(
            f"SELECT count() FROM clusterAllReplicas({CLICKHOUSE_CLUSTER}, {db}, cells_local) "
            "WHERE account_id = {a:String}",
            {"a": account},
        )
        queued = await store.query_rows(
            "SELECT count(), sum(data_files) FROM system.distribution_queue "
            "WHERE database = {db:String}",
            {"db": db},
        )
    finally:
        await store.close()
    holding = scan([clickhouse_cluster_server.data_dir], [canary]).holding(canary)
    hidden = [path for path in holding if "/shard1_replica1/" in path]

    assert seen_by_purge == [(1,)], "the row is not where the purge looks"
    assert queued[0][1] == 0, "the row waits in a Distributed table's queue"
    assert hidden == [], "the row sits on disk in a Distributed table's folder"
