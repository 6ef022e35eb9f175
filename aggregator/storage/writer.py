"""Idempotent writes to ClickHouse, with the on-disk spool while ClickHouse is unreachable.

Every batch carries a deterministic ``insert_deduplication_token``: ClickHouse drops an
insert whose token it has seen among the table's last ``non_replicated_deduplication_window``
blocks, so a retried batch (after a timeout whose insert did land, or a replay from the spool
after a crash between the insert and the spool's pop) never counts twice.

Order is kept: a write first replays the spool (unless a failure was seen less than
``retry_interval`` ago); while the spool still holds anything, the new batch goes behind it.
A replay pops a batch only after ClickHouse accepted it, and stops at the first failure. One
lock serialises writes and replays, so batches reach ClickHouse in the order handed in.

When neither ClickHouse nor the spool takes a batch, :class:`SpoolFull` (a ``StorageError``)
is raised and :meth:`Writer.accepting` turns False: the report endpoint answers 503 rather
than dropping anything silently.

Any ``StorageError`` of an insert counts as "not written now" and the batch is spooled; a
batch ClickHouse refuses for good (wrong columns) would then hold the spool up, visibly:
``streamtally_writes_total{outcome="failed"}`` and the spool gauges grow.
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter, Histogram

from aggregator.storage.spool import Batch, Spool, SpoolFull
from aggregator.storage.store import Store
from collector.errors import StorageError

__all__ = ["Batch", "SpoolFull", "Writer"]

log = logging.getLogger("streamtally.aggregator.writer")

WRITES = Counter(
    "streamtally_writes_total",
    "Batches written at once, spooled, replayed from the spool; failed: insert attempts "
    "that failed (the batch is spooled or stays spooled)",
    ["outcome"],
)
for _outcome in ("written", "spooled", "replayed", "failed"):
    WRITES.labels(_outcome)
REFUSED = Counter(
    "streamtally_spool_refused_batches_total",
    "Batches neither written nor spooled because the spool was full (SpoolFull raised)",
)
WRITE_SECONDS = Histogram(
    "streamtally_write_seconds",
    "Time of one insert attempt into ClickHouse, failed ones included",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class Writer:
    """Writes batches to ClickHouse once each, spooling them while ClickHouse is away."""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        *,
        timeout: float = 30.0,
        retry_interval: float = 1.0,
    ) -> None:
        """``timeout`` bounds one insert; ``retry_interval`` spaces the replays that
        :meth:`write` attempts on its own after a failure (:meth:`drain` always tries)."""
        self._store = store
        self._spool = spool
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._lock = asyncio.Lock()
        self._failed_at = float("-inf")

    async def write(self, batch: Batch) -> bool:
        """True if written to ClickHouse now, False if spooled. Raises SpoolFull."""
        async with self._lock:
            if len(self._spool) and time.monotonic() - self._failed_at >= self._retry_interval:
                await self._drain()  # first, so a spool full of old batches can make room
            if len(self._spool):
                await self._append(batch)  # behind the older batches: order is kept
                return False
            try:
                await self._insert(batch)
            except StorageError as exc:
                log.warning("%s; spooling the batch", exc)
                await self._append(batch)
                return False
            WRITES.labels("written").inc()
            return True

    async def drain(self) -> int:
        """Replay spooled batches oldest first; stop at the first failure. Returns how many."""
        async with self._lock:
            return await self._drain()

    async def drain_forever(self, interval: float = 5.0) -> None:
        """Replay the spool every ``interval`` seconds while it holds anything (a task)."""
        while True:
            await asyncio.sleep(interval)
            if not len(self._spool):
                continue
            try:
                written = await self.drain()
            except StorageError as exc:  # the spool's disk, not ClickHouse: keep trying
                log.error("spool replay failed: %s", exc)
                continue
            if written:
                log.info("spool: %d batch(es) replayed, %d left", written, len(self._spool))

    def accepting(self) -> bool:
        """False while the spool is full: the report endpoint answers 503."""
        return not self._spool.full()

    def spool_bytes(self) -> int:
        return self._spool.bytes()

    # ---- internals --------------------------------------------------------------------------

    async def _drain(self) -> int:
        written = 0
        while (batch := await asyncio.to_thread(self._spool.peek)) is not None:
            try:
                await self._insert(batch)
            except StorageError as exc:
                log.warning("%s; %d batch(es) stay in the spool", exc, len(self._spool))
                break
            # A crash right here replays this batch later: its token makes that a no-op.
            await asyncio.to_thread(self._spool.pop)
            WRITES.labels("replayed").inc()
            written += 1
        return written

    async def _insert(self, batch: Batch) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                await self._store.insert(
                    batch.table,
                    batch.rows,
                    batch.columns,
                    settings={"insert_deduplication_token": batch.token},
                )
        except TimeoutError:
            self._failed()
            # The insert may still land: the token makes a later retry of it harmless.
            raise StorageError(
                f"ClickHouse at {self._store.where} did not finish an insert into "
                f"{batch.table} within {self._timeout:g} s"
            ) from None
        except StorageError:
            self._failed()
            raise
        finally:
            WRITE_SECONDS.observe(time.monotonic() - started)
        self._failed_at = float("-inf")

    def _failed(self) -> None:
        self._failed_at = time.monotonic()
        WRITES.labels("failed").inc()

    async def _append(self, batch: Batch) -> None:
        try:
            await asyncio.to_thread(self._spool.append, batch)
        except SpoolFull:
            REFUSED.inc()
            log.error(
                "the spool is full (%d of %d bytes): a batch for %s was refused",
                self._spool.bytes(),
                self._spool.max_bytes,
                batch.table,
            )
            raise
        WRITES.labels("spooled").inc()
