"""The account purge on a ClickHouse cluster: the same steps, on every replica of every shard.

:class:`aggregator.purge.purger.Purger` works on one server. With ``clickhouse_cluster`` set
the data lives in ``<table>_local`` on each node (aggregator/storage/cluster_schema.py), so
each step changes:

- the tables are the ``*_local`` MergeTree tables, named in the receipt without the suffix;
- the delete is ``ALTER TABLE db.t_local ON CLUSTER c DELETE … SETTINGS mutations_sync = 2``:
  the distributed DDL returns once every node has run it, and ``mutations_sync = 2`` makes
  each wait until the mutation is done on every replica of its shard;
- every check reads every replica, not one per shard: rows left are counted in
  ``clusterAllReplicas(c, db, t_local)``, and ``system.mutations``, ``system.parts`` and
  ``system.detached_parts`` are read through ``clusterAllReplicas(c, system.…)`` per host,
  so a replica that lags (or missed the mutation) fails the purge, which stays pending.

Cluster and database names are checked by :class:`ClusterSchema`; table names come from
``system.tables`` and are checked again before they are written into SQL.
"""

from __future__ import annotations

from collections import defaultdict

from aggregator.purge.purger import EXCLUDED_TABLES, PART_SETTINGS, PurgeNotVerified, Purger
from aggregator.service import Service
from aggregator.storage.cluster_schema import LOCAL_SUFFIX, ClusterSchema
from collector.errors import StorageError


class ClusterPurger(Purger):
    """:class:`Purger` for a store whose ``cluster`` is set."""

    def __init__(self, service: Service) -> None:
        super().__init__(service)
        if self.store.cluster is None:
            raise StorageError("ClusterPurger needs a store with a cluster")
        self.schema: ClusterSchema = self.store.cluster

    # ---- names ----------------------------------------------------------------------------

    def _local(self, table: str) -> str:
        """``db.`t_local``` for a table name found in system.tables."""
        local = ClusterSchema.local(table)
        if not local.replace("_", "a").isalnum():
            raise StorageError(f"unexpected table name {table!r}")
        return f"{self.schema.database}.`{local}`"

    def _everywhere(self, source: str) -> str:
        """A table function reading ``source`` on every replica of every shard."""
        return f"clusterAllReplicas({self.schema.cluster}, {source})"

    # ---- the steps, cluster-wide ----------------------------------------------------------

    async def tables(self) -> list[str]:
        rows = await self.store.query_rows(
            "SELECT c.table FROM system.columns AS c "
            "INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
            "WHERE c.database = {db:String} AND c.name = 'account_id' "
            "AND t.engine LIKE '%MergeTree' AND endsWith(c.table, {s:String}) ORDER BY c.table",
            {"db": self.store.database, "s": LOCAL_SUFFIX},
        )
        names = [r[0][: -len(LOCAL_SUFFIX)] for r in rows]
        return [t for t in names if t not in EXCLUDED_TABLES]

    async def count(self, table: str, account_id: str) -> int:
        """Rows of the account in the active parts of every replica."""
        rows = await self.store.query_rows(
            f"SELECT count() FROM {self._everywhere(self._local(table))} "
            f"WHERE {self._where(table)}",
            {"a": account_id},
            settings={"apply_deleted_mask": 0},
        )
        return int(rows[0][0])

    async def purge_table(self, table: str, account_id: str) -> int:
        found = await self.count(table, account_id)
        if found:
            await self.store.command(
                f"ALTER TABLE {self._local(table)}{self.schema.on_cluster} "
                f"DELETE WHERE {self._where(table)}",
                {"a": account_id},
                settings={"mutations_sync": 2},
            )
        return found

    async def verify_table(self, table: str, account_id: str) -> int:
        left = await self.count(table, account_id)
        if left:
            return left
        blocks = await self._mutation_blocks(table, account_id)
        if not blocks:
            return 0
        parts = await self.store.query_rows(
            "SELECT hostName(), min(data_version) "
            f"FROM {self._everywhere('system.parts')} "
            "WHERE database = {db:String} AND table = {t:String} AND active GROUP BY hostName()",
            {"db": self.store.database, "t": ClusterSchema.local(table)},
        )
        for host, oldest in parts:
            if host not in blocks:
                raise PurgeNotVerified(f"a replica of {table} has not run the purge mutation")
            if int(oldest) < blocks[host]:
                raise PurgeNotVerified(f"{table} has active parts the purge did not rewrite")
        return 0

    async def _mutation_blocks(self, table: str, account_id: str) -> dict[str, int]:
        """Per host, the block number of its latest mutation naming the account."""
        rows = await self.store.query_rows(
            "SELECT hostName(), is_done, latest_fail_reason, arrayMin(block_numbers.number), "
            f"create_time FROM {self._everywhere('system.mutations')} "
            "WHERE database = {db:String} AND table = {t:String} "
            "AND position(command, {a:String}) > 0",
            {"db": self.store.database, "t": ClusterSchema.local(table), "a": account_id},
        )
        latest: dict[str, tuple[object, int]] = {}
        for host, done, failure, block, created in rows:
            if not done:
                raise PurgeNotVerified(f"a mutation of {table} has not finished on every replica")
            if host not in latest or created > latest[host][0]:
                if failure:
                    raise PurgeNotVerified(f"the purge mutation of {table} failed on a replica")
                latest[host] = (created, int(block))
        return {host: block for host, (_, block) in latest.items()}

    async def short_lived_parts(self, table: str) -> None:
        await self.store.command(
            f"ALTER TABLE {self._local(table)}{self.schema.on_cluster} "
            f"MODIFY SETTING {PART_SETTINGS}"
        )

    async def _parts(self, table: str, active: bool) -> list[str]:
        rows = await self.store.query_rows(
            "SELECT hostName(), name "
            f"FROM {self._everywhere('system.parts')} "
            "WHERE database = {db:String} AND table = {t:String} AND active = {a:UInt8}",
            {"db": self.store.database, "t": ClusterSchema.local(table), "a": int(active)},
        )
        return [f"{host}/{name}" for host, name in rows]

    async def _older_than_purge(self, table: str, account_id: str) -> list[str]:
        blocks = await self._mutation_blocks(table, account_id)
        rows = await self.store.query_rows(
            "SELECT hostName(), name, data_version "
            f"FROM {self._everywhere('system.parts')} "
            "WHERE database = {db:String} AND table = {t:String}",
            {"db": self.store.database, "t": ClusterSchema.local(table)},
        )
        older: defaultdict[str, list[str]] = defaultdict(list)
        for host, name, version in rows:
            if host in blocks and int(version) < blocks[host]:
                older[host].append(f"{host}/{name}")
        return [part for parts in older.values() for part in parts]

    async def _detached_parts(self, table: str) -> int:
        rows = await self.store.query_rows(
            f"SELECT count() FROM {self._everywhere('system.detached_parts')} "
            "WHERE database = {db:String} AND table = {t:String}",
            {"db": self.store.database, "t": ClusterSchema.local(table)},
        )
        return int(rows[0][0])
