"""Writer: idempotent inserts with a deduplication token; spool and in-order replay on outage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from aggregator.storage.spool import Spool, encode_record
from aggregator.storage.store import Store
from aggregator.storage.writer import Batch, SpoolFull, Writer
from collector.errors import StorageError
from tests.chserver import ClickHouseProcess
from tests.conftest import ChDatabase

TALLY_TABLE = """
CREATE TABLE tally
(
    account_id String,
    window_start DateTime64(3, 'UTC'),
    views UInt64,
    hist Array(UInt64),
    by_cdn Map(String, UInt64),
    ratio Float64,
    inserted_at DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
ORDER BY (account_id, window_start)
SETTINGS non_replicated_deduplication_window = 100
"""
COLUMNS = ("account_id", "window_start", "views", "hist", "by_cdn", "ratio")
START = datetime(2026, 11, 24, 1, 2, tzinfo=UTC)
WAIT = 30.0  # seconds: upper bound for any single await in these tests


def batch(i: int, *, views: int | None = None, token: str | None = None) -> Batch:
    """Minute ``i`` of account acc_x: one row."""
    window = START + timedelta(minutes=i)
    row = ["acc_x", window, i if views is None else views, [i, 1], {"cdn-a": i}, i / 3]
    return Batch("tally", COLUMNS, [row], token or f"tally:acc_x:minute:{window.isoformat()}:v1")


def writes(outcome: str) -> float:
    return REGISTRY.get_sample_value("streamtally_writes_total", {"outcome": outcome}) or 0.0


async def bounded(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, WAIT)


async def stored(store: Store) -> list[tuple[Any, ...]]:
    """(window minute index, views) in the order ClickHouse received the rows."""
    rows = await store.query_rows(
        "SELECT dateDiff('minute', {start:DateTime64(3, 'UTC')}, window_start), views "
        "FROM tally ORDER BY inserted_at, window_start",
        {"start": START},
    )
    return [tuple(row) for row in rows]


class Probe:
    """A Store stand-in around the real one: counts inserts; can be down, hang, or fail late."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.where = store.where
        self.inserts = 0
        self.down = False
        self.hang = False
        self.fail_after_landing = False

    async def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.inserts += 1
        if self.down:
            raise StorageError("ClickHouse at test failed an insert into tally: ConnectError")
        if self.hang:
            await asyncio.sleep(3600)
        await self.store.insert(table, rows, column_names, settings=settings)
        if self.fail_after_landing:
            raise StorageError("ClickHouse at test failed an insert into tally: ReadTimeout")


@pytest.fixture
async def store(ch_database: ChDatabase, tmp_path: Path) -> AsyncIterator[Store]:
    url, database = ch_database
    opened = await Store.connect(url=url, data_dir=tmp_path, database=database)
    try:
        await opened.command(TALLY_TABLE)
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", 1 << 20)


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseProcess]:
    """A ClickHouse of this module's own, so stopping it cannot hurt other tests."""
    server = ClickHouseProcess(tmp_path_factory.mktemp("writer-clickhouse") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def outage(
    private_server: ClickHouseProcess, tmp_path: Path
) -> AsyncIterator[tuple[ClickHouseProcess, Store]]:
    """The private ClickHouse (running) and a Store on a fresh database there."""
    private_server.start()
    database = f"writer_{uuid.uuid4().hex[:12]}"
    opened = await Store.connect(url=private_server.url, data_dir=tmp_path, database=database)
    try:
        await opened.command(TALLY_TABLE)
        yield private_server, opened
    finally:
        private_server.start()  # a test may have left it stopped
        await opened.command("DROP DATABASE {db:Identifier} SYNC", {"db": database})
        await opened.close()


# ---- idempotent writes ------------------------------------------------------------------------


async def test_write_inserts_the_rows(store: Store, spool: Spool) -> None:
    writer = Writer(store, spool, timeout=WAIT)
    before = writes("written")
    assert await bounded(writer.write(batch(0)))
    assert await bounded(writer.write(batch(1)))
    rows = await store.query_rows(
        "SELECT account_id, window_start, views, hist, by_cdn, ratio FROM tally ORDER BY views"
    )
    # clickhouse-connect reads DateTime64(3, 'UTC') back as a naive datetime in UTC.
    read = [(*row[:1], row[1].replace(tzinfo=UTC), *row[2:]) for row in rows]
    assert read == [tuple(b.rows[0]) for b in (batch(0), batch(1))]
    assert writes("written") == before + 2
    assert len(spool) == 0


async def test_retried_batch_counts_once(store: Store, spool: Spool) -> None:
    writer = Writer(store, spool, timeout=WAIT)
    for _ in range(3):
        assert await bounded(writer.write(batch(0, views=7)))
    assert await stored(store) == [(0, 7)]


async def test_the_token_decides_what_is_a_retry(store: Store, spool: Spool) -> None:
    writer = Writer(store, spool, timeout=WAIT)
    first = batch(0, views=5, token="tally:acc_x:minute:0:v1")
    # The same rows under another token are another write (e.g. a later provisional version).
    same_rows_new_token = Batch(first.table, first.columns, first.rows, "tally:acc_x:minute:0:v2")
    # A different payload under a token seen before is taken as the retry it claims to be.
    reused_token = batch(1, views=9, token="tally:acc_x:minute:0:v1")
    for b in (first, same_rows_new_token, reused_token):
        assert await bounded(writer.write(b))
    assert await stored(store) == [(0, 5), (0, 5)]


async def test_retry_after_a_timeout_whose_insert_landed_counts_once(
    store: Store, spool: Spool
) -> None:
    # The first attempt reached ClickHouse, but the client saw an error and retries.
    first = batch(0, views=11)
    await store.insert(
        first.table, first.rows, first.columns, settings={"insert_deduplication_token": first.token}
    )
    writer = Writer(store, spool, timeout=WAIT)
    assert await bounded(writer.write(first))
    assert await stored(store) == [(0, 11)]


async def test_insert_that_landed_but_failed_is_spooled_and_replayed_once(
    store: Store, spool: Spool
) -> None:
    probe = Probe(store)
    writer = Writer(probe, spool, timeout=WAIT, retry_interval=0)  # type: ignore[arg-type]
    probe.fail_after_landing = True
    assert not await bounded(writer.write(batch(0)))
    assert len(spool) == 1
    probe.fail_after_landing = False
    assert await bounded(writer.drain()) == 1
    assert len(spool) == 0
    assert await stored(store) == [(0, 0)]


async def test_crash_between_insert_and_pop_replays_without_double_counting(
    store: Store, spool: Spool
) -> None:
    spool.append(batch(0))
    spool.append(batch(1))
    head = spool.peek()
    assert head is not None
    # The previous run inserted the head, then died before popping it from the spool.
    await store.insert(
        head.table, head.rows, head.columns, settings={"insert_deduplication_token": head.token}
    )
    writer = Writer(store, spool, timeout=WAIT)
    assert await bounded(writer.drain()) == 2
    assert await stored(store) == [(0, 0), (1, 1)]


async def test_hanging_insert_times_out_and_is_spooled(store: Store, spool: Spool) -> None:
    probe = Probe(store)
    probe.hang = True
    writer = Writer(probe, spool, timeout=0.2, retry_interval=0)  # type: ignore[arg-type]
    assert not await bounded(writer.write(batch(0)))
    assert len(spool) == 1
    probe.hang = False
    assert await bounded(writer.drain()) == 1
    assert await stored(store) == [(0, 0)]


# ---- outage: spool, order, replay ---------------------------------------------------------------


async def test_outage_spools_in_order_and_replays_each_batch_once(
    outage: tuple[ClickHouseProcess, Store], spool: Spool
) -> None:
    server, store = outage
    writer = Writer(store, spool, timeout=WAIT, retry_interval=0)
    assert await bounded(writer.write(batch(0)))

    server.stop()
    spooled, failed = writes("spooled"), writes("failed")
    for i in (1, 2, 3):
        assert not await bounded(writer.write(batch(i)))
    assert len(spool) == 3
    assert writes("spooled") == spooled + 3
    assert writes("failed") > failed
    assert await bounded(writer.drain()) == 0  # still down: nothing lost, nothing reordered
    assert [spool.peek()] == [batch(1)]
    assert len(spool) == 3

    server.start()
    replayed = writes("replayed")
    assert await bounded(writer.drain()) == 3
    assert writes("replayed") == replayed + 3
    assert len(spool) == 0
    assert writer.spool_bytes() == 0
    assert await stored(store) == [(0, 0), (1, 1), (2, 2), (3, 3)]


async def test_new_batches_queue_behind_the_spool_and_go_out_in_order(
    store: Store, spool: Spool
) -> None:
    probe = Probe(store)
    writer = Writer(probe, spool, timeout=WAIT, retry_interval=0)  # type: ignore[arg-type]
    probe.down = True
    assert not await bounded(writer.write(batch(0)))
    assert not await bounded(writer.write(batch(1)))
    probe.down = False
    # ClickHouse is back: the next write replays the spool first, then goes out itself.
    assert await bounded(writer.write(batch(2)))
    assert len(spool) == 0
    assert await stored(store) == [(0, 0), (1, 1), (2, 2)]


async def test_spooled_writes_do_not_hammer_clickhouse_within_the_retry_interval(
    store: Store, spool: Spool
) -> None:
    probe = Probe(store)
    writer = Writer(probe, spool, timeout=WAIT, retry_interval=3600)  # type: ignore[arg-type]
    probe.down = True
    assert not await bounded(writer.write(batch(0)))
    assert probe.inserts == 1
    for i in range(1, 5):
        assert not await bounded(writer.write(batch(i)))
    assert probe.inserts == 1  # queued behind the spool without another attempt
    probe.down = False
    assert await bounded(writer.drain()) == 5  # an explicit drain always tries
    assert await stored(store) == [(i, i) for i in range(5)]


async def test_spool_survives_a_restart_of_the_aggregator(
    outage: tuple[ClickHouseProcess, Store], tmp_path: Path
) -> None:
    server, store = outage
    folder = tmp_path / "restart-spool"
    first = Spool(folder, 1 << 20)
    writer = Writer(store, first, timeout=WAIT)
    server.stop()
    for i in range(3):
        assert not await bounded(writer.write(batch(i)))
    first.close()
    del writer, first

    server.start()
    second = Spool(folder, 1 << 20)
    try:
        assert len(second) == 3
        assert await bounded(Writer(store, second, timeout=WAIT).drain()) == 3
        assert len(second) == 0
    finally:
        second.close()
    assert await stored(store) == [(0, 0), (1, 1), (2, 2)]


async def test_full_spool_refuses_loudly_and_recovers_after_drain(
    store: Store, tmp_path: Path
) -> None:
    probe = Probe(store)
    sizes = [len(encode_record(batch(i))) for i in range(3)]
    spool = Spool(tmp_path / "small-spool", sizes[0] + sizes[1] + sizes[2] // 2)
    writer = Writer(probe, spool, timeout=WAIT, retry_interval=0)  # type: ignore[arg-type]
    probe.down = True
    assert writer.accepting()
    assert not await bounded(writer.write(batch(0)))
    assert not await bounded(writer.write(batch(1)))
    refused = REGISTRY.get_sample_value("streamtally_spool_refused_batches_total") or 0.0
    with pytest.raises(SpoolFull):
        await bounded(writer.write(batch(2)))
    assert isinstance(SpoolFull("x"), StorageError)
    assert not writer.accepting()
    assert REGISTRY.get_sample_value("streamtally_spool_refused_batches_total") == refused + 1
    assert len(spool) == 2  # nothing that was accepted was dropped
    assert writer.spool_bytes() == sizes[0] + sizes[1]

    probe.down = False
    assert await bounded(writer.drain()) == 2
    assert writer.accepting()
    assert await bounded(writer.write(batch(2)))
    assert await stored(store) == [(0, 0), (1, 1), (2, 2)]
    spool.close()


async def test_full_spool_makes_room_by_replaying_when_clickhouse_is_back(
    store: Store, tmp_path: Path
) -> None:
    probe = Probe(store)
    size = len(encode_record(batch(0)))
    spool = Spool(tmp_path / "one-batch-spool", size)
    writer = Writer(probe, spool, timeout=WAIT, retry_interval=0)  # type: ignore[arg-type]
    probe.down = True
    assert not await bounded(writer.write(batch(0)))
    assert not writer.accepting()
    probe.down = False
    # No explicit drain: the write replays the spool first, then goes out itself.
    assert await bounded(writer.write(batch(1)))
    assert writer.accepting()
    assert await stored(store) == [(0, 0), (1, 1)]
    spool.close()


async def test_concurrent_writes_during_an_outage_each_land_once(
    store: Store, spool: Spool
) -> None:
    probe = Probe(store)
    writer = Writer(probe, spool, timeout=WAIT, retry_interval=0)  # type: ignore[arg-type]
    probe.down = True
    results = await bounded(asyncio.gather(*(writer.write(batch(i)) for i in range(10))))
    assert results == [False] * 10
    probe.down = False
    assert await bounded(writer.drain()) == 10
    assert sorted(await stored(store)) == [(i, i) for i in range(10)]


async def test_drain_forever_replays_once_clickhouse_is_back(store: Store, spool: Spool) -> None:
    probe = Probe(store)
    writer = Writer(probe, spool, timeout=WAIT, retry_interval=0)  # type: ignore[arg-type]
    probe.down = True
    assert not await bounded(writer.write(batch(0)))
    task = asyncio.create_task(writer.drain_forever(interval=0.02))
    try:
        await asyncio.sleep(0.1)
        assert len(spool) == 1  # still down: it keeps the batch
        probe.down = False
        for _ in range(int(WAIT / 0.02)):  # bounded wait for the replay
            if not len(spool):
                break
            await asyncio.sleep(0.02)
        assert len(spool) == 0
    finally:
        task.cancel()
    assert await stored(store) == [(0, 0)]
