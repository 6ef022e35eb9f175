"""The aggregator as the collector's Sink, and the flush cycle that writes what it counts.

    submit → Aggregator (sessions, minute cells) → tick (close minutes)
           → Ledger (release: minutes, then hours and days from what minutes publish and
             hold back) → groups due → Batch (version) → Writer (or spool)

Minute rows are written soon after their minute ends; hour and day rows are written as
provisional rows every ``provisional_seconds`` (each version differs from the one before
only by k-safe parts, :mod:`aggregator.release.ledger`) and once more when their window closes.
Each process run writes its own rows (column ``part``), so a cold restart never overwrites
what an earlier run wrote; queries combine the parts (``cells.PARTS_ADDED_UP``). A hot
restart (``aggregator/hot_restart.py``) hands this run's whole state, its ``part``
included, to the new code: one run, nothing to combine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import Gauge, Summary

from aggregator.config import AggregatorConfig
from aggregator.counting.cells import COLUMNS, CellKey, CellRow, empty_row, row_values
from aggregator.counting.windows import Aggregator, Group
from aggregator.release.ledger import Ledger
from aggregator.release.noise import DpPolicy
from aggregator.storage.accounts_store import AccountStore
from aggregator.storage.spool import Spool
from aggregator.storage.store import Store
from aggregator.storage.writer import Batch, Writer
from collector.config import CollectorConfig
from collector.errors import StorageError
from collector.handover import Event

log = logging.getLogger("streamtally.aggregator")

_DONE = object()  # a generator of flush slices is exhausted
BATCH_SLICE_ROWS = 100  # rows of an insert built between two yields to the loop (~2 ms)
FLUSH_SECONDS = Summary("streamtally_flush_seconds", "Time of one flush cycle")
ACTIVE_SESSIONS = Gauge("streamtally_active_sessions", "Playback sessions held in memory")
OPEN_CELLS = Gauge("streamtally_open_cells", "Cells held in memory")

STOP_MARK = "stopped_at"  # when the last run stopped: a cold start credits playing from it
DRAIN_SECONDS = 2.0  # how often the spool is retried while ClickHouse is away
BATCH_ROWS = 100_000  # rows per insert: a flush of everything (shutdown) is split in these
WRITE_COLUMNS = (*COLUMNS, "part", "retention_days", "version", "is_deleted")
BUDGET_COLUMNS = (
    "account_id",
    "day",
    "epsilon_per_day",
    "delta_per_part",
    "epsilon_spent",
    "delta_spent",
    "parts_released",
    "parts_held",
    "version",
)


@dataclass(frozen=True, slots=True)
class FlushReport:
    groups: int
    rows: int
    tombstones: int
    spooled: int

    def as_json(self) -> dict[str, int]:
        """The body of an admin flush's answer (and a shard's, summed over the cluster)."""
        return dataclasses.asdict(self)


class Service:
    """Implements collector.handover.Sink."""

    def __init__(
        self,
        *,
        store: Store,
        accounts: AccountStore,
        data_dir: Path,
        collector_config: CollectorConfig,
        config: AggregatorConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: the wall clock windows follow (tests pass a test clock)."""
        self.clock = clock
        self.store = store
        self.accounts = accounts
        self.config = config
        self.aggregator = Aggregator(
            breakdowns=("", *config.breakdowns),
            idle_seconds=collector_config.session_idle_seconds,
        )
        self.ledger = Ledger(self._k_of, self._dp_of)
        self.spool = Spool(data_dir / "spool", config.spool_max_bytes)
        self.writer = Writer(store, self.spool)
        self.part = secrets.token_hex(8)  # this process run
        self._lock = asyncio.Lock()
        self._last_provisional = clock()
        self._published: dict[tuple[str, str, float], set[tuple[str, str, str]]] = {}
        self._version = time.time_ns()
        # A cold start: sessions that were playing before it resume without a new view.
        started = clock()
        self.aggregator.resume_until = started + collector_config.session_idle_seconds
        self._stop_mark = data_dir / STOP_MARK
        self.aggregator.resumed_from = min(started, _read_stop_mark(self._stop_mark, started))
        self.generation = 0  # hot restarts of this process so far
        self.handing_over = False  # set by a hot restart: no final flush, the state lives on
        self._release_day: date | None = None  # the day of the windows being released
        self._advanced_to = 0.0  # every window ending at or before this is closed

    # -- hot restart -----------------------------------------------------------------------

    def handover_state(self) -> dict[str, Any]:
        """What this object holds besides the aggregator and the ledger (for a hot restart)."""
        return {
            "part": self.part,
            "published": self._published,
            "version": self._version,
            "last_provisional": self._last_provisional,
            "generation": self.generation,
        }

    def take_over(self, state: dict[str, Any], generation: int) -> None:
        self.part = str(state["part"])
        self._published = dict(state["published"])
        self._version = max(int(state["version"]), self._version)
        self._last_provisional = float(state["last_provisional"])
        self.generation = generation

    # -- Sink ------------------------------------------------------------------------------

    def submit(self, events: Sequence[Event]) -> None:
        self.aggregator.submit(events)

    def forget_account(self, account_id: str) -> None:
        self.aggregator.forget_account(account_id)
        self.ledger.forget_account(account_id)
        self.ledger.budget.forget_account(account_id)
        for key in [k for k in self._published if k[0] == account_id]:
            del self._published[key]

    def accepting(self) -> bool:
        return self.writer.accepting()

    def accepting_for(self, account_id: str) -> bool:
        return True  # one process counts every account: accepting() decides

    # submit() takes the events in this process: the lean path need not await delivered().
    delivers_at_once = True

    async def delivered(self) -> bool:
        return True  # submit() took the events in this process

    # -- status ----------------------------------------------------------------------------

    def spool_bytes(self) -> int:
        return self.writer.spool_bytes()

    def update_gauges(self) -> None:
        stats = self.aggregator.stats()
        ACTIVE_SESSIONS.set(stats.get("active_sessions", 0))
        OPEN_CELLS.set(stats.get("leaves", 0) + self.ledger.stats()["rows"])

    # -- flushing --------------------------------------------------------------------------

    def _next_version(self) -> int:
        self._version = max(self._version + 1, time.time_ns())
        return self._version

    def _k_of(self, account_id: str) -> int:
        """The account's k on the UTC day whose windows are being released (the current
        day outside a flush). A changed k takes effect from the next UTC day; windows of
        the day before that close after midnight are still released under that day's k."""
        account = self.accounts.by_id(account_id)
        if account is None:
            return self.config.default_k
        day = self._release_day or _utc_day(self.clock())
        return max(2, account.k_on(day))

    def _dp_of(self, account_id: str, day_start: int) -> DpPolicy | None:
        """The account's dp policy for the UTC day starting at ``day_start``, or None (k)."""
        account = self.accounts.by_id(account_id)
        if account is None or account.privacy != "dp" or day_start < account.privacy_from:
            return None
        return DpPolicy(account.epsilon_per_day, account.delta)

    def _retention(self, account_id: str) -> int:
        account = self.accounts.by_id(account_id)
        return account.retention_days if account is not None else self.config.retention_days

    async def start_spool(self) -> None:
        """Replay what an earlier run left in the spool (best effort: ClickHouse may be down)."""
        if len(self.spool):
            written = await self.writer.drain()
            log.info(
                "spool replay at start: %d batch(es) written, %d left", written, len(self.spool)
            )

    async def flush(self, now: float | None = None, *, everything: bool = False) -> FlushReport:
        """Write what is due; ``everything`` writes every open cell now (admin flush, shutdown)."""
        async with self._lock:
            with FLUSH_SECONDS.time():
                return await self._flush(self.clock() if now is None else now, everything)

    async def _flush(self, now: float, everything: bool) -> FlushReport:
        if everything:
            self.aggregator.close_now(now)
        else:
            for _ in self.aggregator.tick_steps(now):
                await asyncio.sleep(0)  # a big minute closes in slices: requests go on
        for raw in self.aggregator.take_closed():
            # A big minute is released in slices too, each under the minute's day (for k).
            steps = self.ledger.add_minute_steps(raw)
            day = _utc_day(raw.window_start.timestamp())
            while True:
                self._release_day = day
                try:
                    more = next(steps, _DONE) is not _DONE
                finally:
                    self._release_day = None
                await asyncio.sleep(0)
                if not more:
                    break
        boundary = self.aggregator.open_minute * 60
        self._advance(boundary)
        provisional = everything or now - self._last_provisional >= self.config.provisional_seconds
        if provisional:
            self._last_provisional = now
        # Windows still open after the advance all hold the boundary: they are of its day.
        self._release_day = _utc_day(boundary)
        try:
            groups = self.ledger.groups(changed_only=not everything, settle_open=provisional)
        finally:
            self._release_day = None
        due = [
            g
            for g in groups
            if g.closed or everything or (provisional and g.granularity != "minute")
        ]
        # One version and one insert for the whole flush: a flush's rows land together (a
        # reader never sees an hour's new version without the minute rows it adds), and the
        # provisional flushes pay ClickHouse's per-insert cost once, not once per group.
        version = self._next_version() if due else 0
        values: list[list[object]] = []
        rows = tombstones = spooled = 0
        for group in due:
            await asyncio.sleep(0)  # one group's k-anonymity at a time between requests
            n_rows, n_tomb = await self._batch(group, version, values)
            rows += n_rows
            tombstones += n_tomb
        for at in range(0, len(values), BATCH_ROWS):
            token = f"cells:{self.part}:{version}:{at // BATCH_ROWS}"
            batch = Batch("cells", WRITE_COLUMNS, values[at : at + BATCH_ROWS], token)
            if not await self.writer.write(batch):
                spooled += 1
        self.ledger.written(due)
        await self._write_budget(now)
        for g in due:
            if g.closed:
                self._published.pop(self._group_id(g), None)
        if len(self.spool) and not spooled:
            await self.writer.drain()
        self.update_gauges()
        return FlushReport(len(due), rows, tombstones, spooled)

    async def _write_budget(self, now: float) -> None:
        """dp accounts: the days whose budget moved, to ``privacy_budget`` (no viewer key)."""
        budget = self.ledger.budget
        days = budget.days(changed_only=True)
        if days:
            version = self._next_version()
            rows = [
                [
                    d.account_id,
                    datetime.fromtimestamp(d.day, UTC).date(),
                    d.epsilon_per_day,
                    d.delta_per_part,
                    d.epsilon_spent,
                    d.delta_spent,
                    d.parts_released,
                    d.parts_held,
                    version,
                ]
                for d in days
            ]
            try:
                await self.store.insert("privacy_budget", rows, column_names=BUDGET_COLUMNS)
            except StorageError as exc:
                log.warning("privacy budget not written (kept for the next flush): %s", exc)
                return
            budget.written(days)
        budget.forget_before(self.aggregator.open_minute * 60)

    def _advance(self, boundary: float) -> None:
        """Close the hours and days ending by ``boundary`` one UTC day at a time, each day's
        under that day's k (after a long pause several days may close at once)."""
        midnight = (max(self._advanced_to, boundary - 7 * DAY) // DAY + 1) * DAY
        edges = [*_frange(midnight, boundary, DAY), boundary]
        try:
            for edge in edges:
                self._release_day = _utc_day(edge - 1)  # what ends at midnight is of the day before
                self.ledger.advance(edge)
        finally:
            self._release_day = None
        self._advanced_to = max(self._advanced_to, boundary)

    @staticmethod
    def _group_id(group: Group) -> tuple[str, str, float]:
        return (group.account_id, group.granularity, group.window_start.timestamp())

    async def _batch(self, group: Group, version: int, out: list[list[object]]) -> tuple[int, int]:
        """Append the group's rows (and tombstones for rows it no longer publishes) to
        ``out`` under ``version``; returns how many of each. Built in slices of
        BATCH_SLICE_ROWS rows between which requests go on (a benchmark hour took ~25 ms in
        one piece)."""
        published: list[CellRow] = group.to_rows()
        await asyncio.sleep(0)
        gid = self._group_id(group)
        before = self._published.get(gid, set())
        now_keys = {(r.key.stream, r.key.breakdown, r.key.value) for r in published}
        gone = before - now_keys
        if not published and not gone:
            return 0, 0
        retention = self._retention(group.account_id)
        part = self.part
        for at in range(0, len(published), BATCH_SLICE_ROWS):
            if at:
                await asyncio.sleep(0)
            out.extend(
                [*row_values(r), part, retention, version, 0]
                for r in published[at : at + BATCH_SLICE_ROWS]
            )
        for stream, breakdown, value in sorted(gone):
            out.append(self._tombstone(group, stream, breakdown, value, retention, version))
        self._published[gid] = now_keys
        return len(published), len(gone)

    def _tombstone(
        self, group: Group, stream: str, breakdown: str, value: str, retention: int, version: int
    ) -> list[object]:
        row = empty_row(
            CellKey(
                group.account_id, stream, group.granularity, group.window_start, breakdown, value
            )
        )
        return [*row_values(row), self.part, retention, version, 1]

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the periodic flush, and on shutdown a final flush of everything."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.config.flush_seconds)
                try:
                    await self.flush()
                except StorageError as exc:
                    log.warning("flush failed: %s", exc)

        tasks = [
            asyncio.create_task(loop()),
            asyncio.create_task(self.writer.drain_forever(DRAIN_SECONDS)),
        ]
        yield
        if self.handing_over:  # a hot restart: wait for a flush under way, then stop, no more
            async with self._lock:
                await self._stop(tasks)
            return
        await self._stop(tasks)
        now = self.clock()
        self.aggregator.end_all(now)
        _write_stop_mark(self._stop_mark, now)
        report = await self.flush(now, everything=True)
        log.info(
            "final flush: %d group(s), %d row(s), %d spooled",
            report.groups,
            report.rows,
            report.spooled,
        )

    @staticmethod
    async def _stop(tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _read_stop_mark(path: Path, default: float) -> float:
    """When the run before stopped cleanly (a unix time, nothing else), then forgotten."""
    try:
        value = float(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return default
    return value


def _write_stop_mark(path: Path, now: float) -> None:
    try:
        path.write_text(f"{now:.3f}\n")
    except OSError as exc:
        log.warning("stop time not noted (%s): playing time across the restart is lost", exc)


SERVICE = web.AppKey("service", Service)
DAY = 86400


def _utc_day(at: float) -> date:
    return datetime.fromtimestamp(at, UTC).date()


def _frange(start: float, stop: float, step: float) -> list[float]:
    out: list[float] = []
    while start < stop:
        out.append(start)
        start += step
    return out
