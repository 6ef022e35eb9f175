"""Account deletion with a verified purge, resumable after any interruption.

``Purger.purge(account_id, actor)`` runs these steps; each one is idempotent, so running the
whole sequence again after an interruption (``resume``, at every start) finishes the job:

a. ``purges`` gets a row with state ``running`` (table fsynced on insert) before anything else.
b. The account is flagged deleted (reports get 410 from now on) and all its tokens revoked;
   the service drops its in-memory sessions and cells (``Service.forget_account``); a flush in
   progress is waited for, so cells of the account it took before that are written, and the
   spool is drained, so no spooled batch of it can land after the purge (a batch still spooled
   fails the purge, which then stays ``running`` and is resumed). The account row becomes a
   tombstone: id, ``deleted = 1``, SHA-256 of the embed key — no name, origins or embed key.
   The collector's de-duplication state is keyed by opaque session handles, holds no account
   id and expires by itself after ``session_idle_seconds``; it is left to expire.
c. Every table of the database with an ``account_id`` column (found in ``system.columns``, so
   a new table is covered without a change here), except ``purges``, is purged with
   ``ALTER TABLE t DELETE WHERE account_id = … SETTINGS mutations_sync = 2``: the statement
   returns once the mutation has rewritten every part. In ``accounts`` the tombstone is kept
   (``TOMBSTONE_SQL``). Rows are counted first (``rows_deleted``).
d. Verification, per table:
   - ``SELECT count() … WHERE account_id = …`` with ``apply_deleted_mask = 0`` is 0: this reads
     every row physically present in every *active* part — rows hidden by a lightweight delete
     or superseded in a ReplacingMergeTree would be counted too. Only active parts are readable
     at all; the parts the mutation replaced become inactive at once and are removed from disk
     by ClickHouse after ``old_parts_lifetime`` (8 minutes by default);
   - the table has no unfinished mutation (``system.mutations``, ``is_done = 0``), and ours has
     no failure reason;
   - no active part is older than our mutation: each has ``data_version`` >= the mutation's
     block number (``system.parts``), i.e. every part was rewritten by it or written after it.
   Rows found again (a write racing the purge) are purged again, up to three rounds.
e. Nothing left on disk: the parts the mutation replaced, and any part already outdated
   before it, still hold the account's rows (name, origins, embed key in old versions of the
   account row; stream names and error codes in cells; request summaries in audit) until
   ClickHouse removes them. Before the mutation every table gets ``PART_SETTINGS``
   (``old_parts_lifetime = 1``, with merges and mutations fsyncing their result instead);
   after verification the names of the table's inactive parts are taken, and the purge
   waits (at most ``PARTS_WAIT_SECONDS``) until ClickHouse has removed every one of them.
   A detached part (``system.detached_parts``) may hold anything: it fails the purge, for
   the operator to look at. Parts are what ClickHouse keeps of rows on disk; the mutation
   text (``mutation_*.txt``, ``system.mutations``) names only the account id, as does any
   query log, since every value is a bound parameter.
f. The receipt ``{"account_id", "tables", "rows_deleted", "verified_zero": true, "checked",
   "finished_at", ...}`` is written to ``purges`` (state ``done``) and returned. ``checked``
   says, per table, what was verified: ``rows_left`` (active parts, deleted mask ignored),
   ``outdated_parts_left`` (inactive parts from before the verification still present) and
   ``detached_parts``, each 0.

The audit rows of the account are purged with it; its purge row is its record.

On a ClickHouse cluster (setting ``clickhouse_cluster``) :class:`aggregator.purge.cluster.
ClusterPurger` runs the same steps on every replica of every shard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import Counter

from aggregator.api.params import iso
from aggregator.service import Service
from aggregator.storage.accounts_store import TOMBSTONE_SQL
from aggregator.storage.store import Store
from collector.errors import NotFound, StorageError

log = logging.getLogger("streamtally.purge")

ROUNDS = 3
RETRY_SECONDS = 60.0
# Outdated parts go after 1 s; merges and mutations fsync their result, so the old parts are
# not needed to survive a crash (migration 0007 sets the same on the shipped tables).
PART_SETTINGS = (
    "old_parts_lifetime = 1, min_compressed_bytes_to_fsync_after_merge = 1, "
    "fsync_part_directory = 1"
)
PARTS_WAIT_SECONDS = 120.0
PARTS_POLL_SECONDS = 0.2
PURGE_COLUMNS = (
    "account_id",
    "actor",
    "started_at",
    "finished_at",
    "state",
    "receipt",
    "version",
)
EXCLUDED_TABLES = frozenset({"purges"})

PURGES = Counter(
    "streamtally_purges_total",
    "Account purges run: done (verified, receipt written) or failed (left pending, resumed "
    "at the next start); the alert 'purge failed' watches the second",
    ["outcome"],
)
for _outcome in ("done", "failed"):
    PURGES.labels(_outcome)


class PurgeNotVerified(StorageError):
    """Rows of the account were still found after the purge; it stays ``running``."""


class Purger:
    """Deletes accounts for a service; one purge per account at a time."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store: Store = service.store
        self.accounts = service.accounts
        self._locks: dict[str, asyncio.Lock] = {}
        self._version = time.time_ns()

    # ---- public ---------------------------------------------------------------------------

    async def purge(self, account_id: str, actor: str) -> dict[str, Any]:
        """Delete the account and every row of it; returns the receipt (again if done before)."""
        lock = self._locks.setdefault(account_id, asyncio.Lock())
        async with lock:
            done = await self.receipt(account_id)
            if done is not None:
                return done
            if self.accounts.by_id(account_id) is None:
                await self.accounts.load()
                if self.accounts.by_id(account_id) is None:
                    raise NotFound("no such account", key="account_id")
            started = await self._begin(account_id, actor)
            return await self._run(account_id, actor, started)

    async def receipt(self, account_id: str) -> dict[str, Any] | None:
        """The receipt of a finished purge of the account, or None."""
        rows = await self.store.query_rows(
            "SELECT receipt FROM purges FINAL WHERE account_id = {a:String} AND state = 'done'",
            {"a": account_id},
        )
        if not rows:
            return None
        receipt: dict[str, Any] = orjson.loads(rows[0][0])
        return receipt

    async def pending(self) -> list[tuple[str, str, datetime]]:
        """(account_id, actor, started_at) of every purge not finished, oldest first."""
        rows = await self.store.query_rows(
            "SELECT account_id, actor, started_at FROM purges FINAL "
            "WHERE state = 'running' ORDER BY started_at"
        )
        return [(r[0], r[1], _utc(r[2])) for r in rows]

    async def resume(self) -> list[dict[str, Any]]:
        """Finish every purge an earlier run left unfinished; their receipts."""
        receipts = []
        for account_id, actor, started in await self.pending():
            self.accounts.forget_in_memory(account_id)  # 410 at once, even if the rest fails
            lock = self._locks.setdefault(account_id, asyncio.Lock())
            async with lock:
                if await self.receipt(account_id) is None:
                    log.info("resuming an interrupted account purge")
                    receipts.append(await self._run(account_id, actor, started))
        return receipts

    # ---- steps ----------------------------------------------------------------------------

    def _next_version(self) -> int:
        self._version = max(self._version + 1, time.time_ns())
        return self._version

    async def _begin(self, account_id: str, actor: str) -> datetime:
        """(a) the durable purge-in-progress row."""
        started = datetime.now(UTC)
        await self._write_state(account_id, actor, started, None, "running", "")
        return started

    async def _run(self, account_id: str, actor: str, started: datetime) -> dict[str, Any]:
        try:
            receipt = await self._steps(account_id, actor, started)
        except Exception:
            PURGES.labels("failed").inc()
            raise
        PURGES.labels("done").inc()
        return receipt

    async def _steps(self, account_id: str, actor: str, started: datetime) -> dict[str, Any]:
        await self.stop_account(account_id)
        tables = await self.tables()
        for table in tables:
            await self.short_lived_parts(table)
        deleted: dict[str, int] = {}
        for _ in range(ROUNDS):
            for table in tables:
                deleted[table] = deleted.get(table, 0) + await self.purge_table(table, account_id)
            left = {t: n for t in tables if (n := await self.verify_table(t, account_id))}
            if not left:
                break
        else:
            raise PurgeNotVerified(
                f"rows of the account remain in {', '.join(sorted(left))} after "
                f"{ROUNDS} rounds; the purge stays pending and is resumed at the next start"
            )
        checked = await self.wait_for_old_parts(account_id, tables)
        finished = datetime.now(UTC)
        receipt: dict[str, Any] = {
            "account_id": account_id,
            "tables": sorted(tables),
            "rows_deleted": {t: deleted[t] for t in sorted(tables)},
            "verified_zero": True,
            "checked": checked,
            "started_at": iso(started, "milliseconds"),
            "finished_at": iso(finished, "milliseconds"),
            "kept": {
                "accounts": "a tombstone: account_id, deleted=1, SHA-256 of the embed key",
                "purges": "this receipt",
            },
        }
        await self._write_state(
            account_id, actor, started, finished, "done", orjson.dumps(receipt).decode()
        )
        log.info("account purged: %d row(s) in %d table(s)", sum(deleted.values()), len(tables))
        return receipt

    async def stop_account(self, account_id: str) -> None:
        """(b) 410 from now on, tokens revoked, memory dropped, pending writes settled."""
        self.accounts.forget_in_memory(account_id)
        self.service.forget_account(account_id)
        await self.accounts.mark_deleted(account_id)
        await self._settle()
        self.service.forget_account(account_id)
        if len(self.service.spool):
            await self.service.writer.drain()
            if len(self.service.spool):
                raise StorageError(
                    "the spool still holds batches ClickHouse did not take; the purge stays "
                    "pending until they are written"
                )
        await self.accounts.tombstone(account_id)

    async def _settle(self) -> None:
        """Wait for a flush in progress (it may have taken the account's cells before they
        were forgotten) without starting one: the service's flush lock, taken and released."""
        lock = getattr(self.service, "_lock", None)
        if isinstance(lock, asyncio.Lock):
            async with lock:
                pass
        else:  # no such lock (any more): a flush waits for one in progress just as well
            await self.service.flush()

    async def tables(self) -> list[str]:
        """Every MergeTree-family table of the database with an ``account_id`` column."""
        rows = await self.store.query_rows(
            "SELECT c.table FROM system.columns AS c "
            "INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
            "WHERE c.database = {db:String} AND c.name = 'account_id' "
            "AND t.engine LIKE '%MergeTree' ORDER BY c.table",
            {"db": self.store.database},
        )
        return [r[0] for r in rows if r[0] not in EXCLUDED_TABLES]

    def _where(self, table: str) -> str:
        where = "account_id = {a:String}"
        if table == "accounts":
            where += f" AND NOT ({TOMBSTONE_SQL})"
        return where

    async def count(self, table: str, account_id: str) -> int:
        """Rows of the account physically present in the table's active parts."""
        rows = await self.store.query_rows(
            f"SELECT count() FROM {{t:Identifier}} WHERE {self._where(table)}",
            {"t": table, "a": account_id},
            settings={"apply_deleted_mask": 0},
        )
        return int(rows[0][0])

    async def purge_table(self, table: str, account_id: str) -> int:
        """(c) delete the account's rows with a mutation that is waited for; rows deleted."""
        found = await self.count(table, account_id)
        if found:
            await self.store.command(
                f"ALTER TABLE {{t:Identifier}} DELETE WHERE {self._where(table)}",
                {"t": table, "a": account_id},
                settings={"mutations_sync": 2},
            )
        return found

    async def verify_table(self, table: str, account_id: str) -> int:
        """(d) rows of the account still in an active part (0), or a StorageError."""
        left = await self.count(table, account_id)
        if left:
            return left
        db = self.store.database
        mutations = await self.store.query_rows(
            "SELECT is_done, latest_fail_reason, arrayMin(block_numbers.number) "
            "FROM system.mutations WHERE database = {db:String} AND table = {t:String} "
            "AND position(command, {a:String}) > 0 ORDER BY create_time DESC",
            {"db": db, "t": table, "a": account_id},
        )
        if any(not done for done, _, _ in mutations):
            raise PurgeNotVerified(f"a mutation of {table} has not finished")
        if mutations:
            _, failure, block = mutations[0]
            if failure:
                raise PurgeNotVerified(f"the purge mutation of {table} failed")
            stale = await self.store.query_rows(
                "SELECT count() FROM system.parts WHERE database = {db:String} "
                "AND table = {t:String} AND active AND data_version < {v:UInt64}",
                {"db": db, "t": table, "v": int(block)},
            )
            if stale[0][0]:
                raise PurgeNotVerified(f"{table} has active parts the purge did not rewrite")
        return 0

    async def short_lived_parts(self, table: str) -> None:
        """Outdated parts of the table go after 1 s from now on (``PART_SETTINGS``)."""
        await self.store.command(
            f"ALTER TABLE {{t:Identifier}} MODIFY SETTING {PART_SETTINGS}", {"t": table}
        )

    async def _parts(self, table: str, active: bool) -> list[str]:
        rows = await self.store.query_rows(
            "SELECT name FROM system.parts WHERE database = {db:String} AND table = {t:String} "
            "AND active = {a:UInt8}",
            {"db": self.store.database, "t": table, "a": int(active)},
        )
        return [r[0] for r in rows]

    async def _older_than_purge(self, table: str, account_id: str) -> list[str]:
        """Parts of the table, any state, older than the latest mutation naming the account."""
        rows = await self.store.query_rows(
            "SELECT name FROM system.parts WHERE database = {db:String} AND table = {t:String} "
            "AND data_version < (SELECT max(arrayMin(block_numbers.number)) FROM "
            "system.mutations WHERE database = {db:String} AND table = {t:String} "
            "AND position(command, {a:String}) > 0)",
            {"db": self.store.database, "t": table, "a": account_id},
        )
        return [r[0] for r in rows]

    async def _detached_parts(self, table: str) -> int:
        rows = await self.store.query_rows(
            "SELECT count() FROM system.detached_parts "
            "WHERE database = {db:String} AND table = {t:String}",
            {"db": self.store.database, "t": table},
        )
        return int(rows[0][0])

    async def wait_for_old_parts(
        self, account_id: str, tables: list[str], wait_seconds: float = PARTS_WAIT_SECONDS
    ) -> dict[str, dict[str, int]]:
        """(e) every part inactive now is removed from disk; what was checked, per table.

        Parts becoming inactive later were active after the verification, so they hold no
        row of the account. Raises PurgeNotVerified if ClickHouse does not remove them in
        ``wait_seconds`` (a long query holding them, or a much longer old_parts_lifetime
        set on the table by hand), or if a table has detached parts.
        """
        checked: dict[str, dict[str, int]] = {}
        for table in tables:
            detached = await self._detached_parts(table)
            if detached:
                raise PurgeNotVerified(
                    f"{table} has {detached} detached part(s), which may hold rows of the "
                    "account: remove them (data dir, table's detached/ folder) and the purge "
                    "is resumed at the next start"
                )
            checked[table] = {"rows_left": 0, "outdated_parts_left": 0, "detached_parts": 0}
        waiting = {t: set(await self._parts(t, active=False)) for t in tables}
        deadline = time.monotonic() + wait_seconds
        while True:
            for table in list(waiting):
                waiting[table] &= set(await self._parts(table, active=False))
                waiting[table] |= set(await self._older_than_purge(table, account_id))
                if not waiting[table]:
                    del waiting[table]
            if not waiting:
                return checked
            if time.monotonic() >= deadline:
                left = ", ".join(f"{t} ({len(p)})" for t, p in sorted(waiting.items()))
                raise PurgeNotVerified(
                    "outdated parts from before the purge are still on disk after "
                    f"{wait_seconds:.0f} s: {left}; ClickHouse removes them after the table's "
                    "old_parts_lifetime once no query uses them. The purge stays pending "
                    "and is resumed"
                )
            await asyncio.sleep(PARTS_POLL_SECONDS)

    async def _write_state(
        self,
        account_id: str,
        actor: str,
        started: datetime,
        finished: datetime | None,
        state: str,
        receipt: str,
    ) -> None:
        row: list[Any] = [
            account_id,
            actor,
            started,
            finished,
            state,
            receipt,
            self._next_version(),
        ]
        await self.store.insert("purges", [row], column_names=PURGE_COLUMNS)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# ---- wiring into the app ----------------------------------------------------------------
