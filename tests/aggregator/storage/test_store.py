"""Store: one async interface over ClickHouse-over-HTTP and the embedded chDB engine."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.storage.store import Store
from collector.errors import StorageError
from tests.chserver import ClickHouseProcess, free_port

EVENTS_TABLE = """
CREATE TABLE events
(
    id UInt64,
    name String,
    tags Array(String),
    at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY id
SETTINGS non_replicated_deduplication_window = 100
"""
COLUMNS = ["id", "name", "tags", "at"]
AT = datetime(2026, 11, 1, 12, 30, 15, 123000, tzinfo=UTC)


async def make_events(store: Store) -> None:
    await store.command(EVENTS_TABLE)
    await store.insert(
        "events",
        [[1, "alpha", ["a", "b"], AT], [2, "it's; DROP TABLE events --", [], AT]],
        column_names=COLUMNS,
    )


async def test_connect_creates_and_uses_the_database(
    request: pytest.FixtureRequest, tmp_path: Path, clickhouse_server: ClickHouseProcess
) -> None:
    fresh = f"fresh_{uuid.uuid4().hex[:12]}"
    store = await Store.connect(url=clickhouse_server.url, data_dir=tmp_path, database=fresh)
    try:
        assert store.database == fresh
        assert not store.embedded
        assert await store.query_rows("SELECT currentDatabase()") == [(fresh,)]
        await store.command("CREATE TABLE t (x UInt8) ENGINE = Memory")
        tables = await store.query_rows(
            "SELECT name FROM system.tables WHERE database = {db:String}", {"db": fresh}
        )
        assert tables == [("t",)]
        # Connecting again to an existing database keeps its tables.
        again = await Store.connect(url=clickhouse_server.url, data_dir=tmp_path, database=fresh)
        assert await again.query_rows("EXISTS TABLE t") == [(1,)]
        await again.close()
    finally:
        await store.command("DROP DATABASE {db:Identifier} SYNC", {"db": fresh})
        await store.close()


async def test_embedded_store_creates_default_database_in_data_dir(tmp_path: Path) -> None:
    store = await Store.connect(url=None, data_dir=tmp_path)
    try:
        assert store.embedded
        assert store.database == "streamtally"
        assert await store.query_rows("SELECT currentDatabase()") == [("streamtally",)]
        assert (tmp_path / "clickhouse").is_dir()
        assert str(tmp_path / "clickhouse") in store.where
    finally:
        await store.close()


async def test_insert_and_query_round_trip(store: Store) -> None:
    await make_events(store)
    rows = await store.query_rows("SELECT id, name, tags, at FROM events ORDER BY id")
    assert rows == [
        (1, "alpha", ["a", "b"], AT.replace(tzinfo=None)),
        (2, "it's; DROP TABLE events --", [], AT.replace(tzinfo=None)),
    ]
    dicts = await store.query_dicts("SELECT id, name FROM events ORDER BY id")
    assert dicts == [{"id": 1, "name": "alpha"}, {"id": 2, "name": "it's; DROP TABLE events --"}]


async def test_parameters_are_bound_not_spliced(store: Store) -> None:
    await make_events(store)
    hostile = "it's; DROP TABLE events --"
    rows = await store.query_rows(
        "SELECT id FROM events "
        "WHERE name = {name:String} AND has(tags, {tag:String}) = {has:UInt8}",
        {"name": hostile, "tag": "a", "has": 0},
    )
    assert rows == [(2,)]
    assert await store.query_rows(
        "SELECT count() FROM events WHERE name = {n:String}", {"n": "' OR 1=1 --"}
    ) == [(0,)]
    assert await store.query_rows("SELECT count() FROM events") == [(2,)]


async def test_settings_reach_clickhouse(store: Store) -> None:
    rows = await store.query_rows("SELECT getSetting('max_threads')", settings={"max_threads": 3})
    assert rows == [(3,)]
    await store.command("CREATE TABLE s (x UInt8) ENGINE = Memory")
    with pytest.raises(StorageError, match="TOO_MANY_ROWS"):
        await store.query_rows(
            "SELECT number FROM numbers(10)",
            settings={"max_result_rows": 2, "result_overflow_mode": "throw"},
        )


async def test_insert_deduplication_token_keeps_one_copy(store: Store) -> None:
    await store.command(EVENTS_TABLE)
    batch = [[1, "a", [], AT], [2, "b", [], AT]]
    for _ in range(2):
        await store.insert(
            "events", batch, COLUMNS, settings={"insert_deduplication_token": "flush-1"}
        )
    assert await store.query_rows("SELECT count() FROM events") == [(2,)]
    await store.insert("events", batch, COLUMNS, settings={"insert_deduplication_token": "flush-2"})
    assert await store.query_rows("SELECT count() FROM events") == [(4,)]


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        pytest.param("CSV", lambda b: b == b'1,"alpha"\n', id="csv"),
        pytest.param(
            "JSONEachRow",
            lambda b: {k: str(v) for k, v in json.loads(b).items()} == {"id": "1", "name": "alpha"},
            id="jsoneachrow",
        ),
        pytest.param(
            "Parquet", lambda b: b.startswith(b"PAR1") and b.endswith(b"PAR1"), id="parquet"
        ),
    ],
)
async def test_raw_stream_lets_clickhouse_format(
    store: Store, fmt: str, check: Callable[[bytes], bool]
) -> None:
    await make_events(store)
    chunks = [
        chunk
        async for chunk in store.raw_stream(
            "SELECT id, name FROM events WHERE id = {id:UInt64}", fmt, {"id": 1}
        )
    ]
    assert all(isinstance(chunk, bytes) for chunk in chunks)
    assert check(b"".join(chunks))


async def test_raw_stream_refuses_a_format_that_is_not_a_name(store: Store) -> None:
    with pytest.raises(StorageError, match="fmt"):
        async for _ in store.raw_stream("SELECT 1", "CSV; DROP TABLE x"):
            pass


async def test_errors_name_the_statement_but_never_the_values(store: Store) -> None:
    canary = "canary-7f3a-viewer-data"
    with pytest.raises(StorageError) as caught:
        await store.query_rows("SELECT toUInt8({v:String})", {"v": canary})
    message = str(caught.value)
    assert "SELECT toUInt8({v:String})" in message
    assert "code" in message
    assert canary not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__  # the driver's text (may quote rows) is not chained

    await store.command("CREATE TABLE n (x UInt8) ENGINE = Memory")
    with pytest.raises(StorageError, match="insert into n") as caught:
        await store.insert("n", [[canary]], ["x"])
    assert canary not in str(caught.value)


async def test_unknown_table_is_a_storage_error_naming_the_error(store: Store) -> None:
    with pytest.raises(StorageError, match=r"UNKNOWN_TABLE \(code 60\)"):
        await store.query_rows("SELECT * FROM no_such_table")


async def test_ping_and_close(store: Store) -> None:
    assert await store.ping() is True
    await store.close()
    assert await store.ping() is False
    with pytest.raises(StorageError, match="closed"):
        await store.query_rows("SELECT 1")
    await store.close()  # closing twice is harmless


async def test_unreachable_url_is_a_storage_error_without_credentials(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(StorageError) as caught:
        await Store.connect(url=f"http://ops:hunter2@127.0.0.1:{port}", data_dir=tmp_path)
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}" in message
    assert "hunter2" not in message
    assert "ops" not in message


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://ops:hunter2@127.0.0.1:9000", id="wrong-scheme"),
        pytest.param("http://ops:hunter2@", id="no-host"),
        pytest.param("http://ops:hunter2@127.0.0.1:notaport", id="bad-port"),
    ],
)
async def test_malformed_url_is_a_storage_error_without_credentials(
    url: str, tmp_path: Path
) -> None:
    with pytest.raises(StorageError) as caught:
        await Store.connect(url=url, data_dir=tmp_path)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("name", ["1abc", "a-b", "db; DROP", "", "x" * 64])
async def test_database_name_must_be_an_identifier(name: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="database"):
        await Store.connect(url="http://127.0.0.1:1", data_dir=tmp_path, database=name)


async def test_embedded_data_survives_reopening(tmp_path: Path) -> None:
    store = await Store.connect(url=None, data_dir=tmp_path)
    await make_events(store)
    await store.close()
    reopened = await Store.connect(url=None, data_dir=tmp_path)
    try:
        assert await reopened.query_rows("SELECT count() FROM events") == [(2,)]
    finally:
        await reopened.close()


async def test_embedded_allows_one_data_dir_at_a_time_per_process(tmp_path: Path) -> None:
    first = await Store.connect(url=None, data_dir=tmp_path / "one")
    try:
        with pytest.raises(StorageError, match="one at a time") as caught:
            await Store.connect(url=None, data_dir=tmp_path / "two")
        assert str(tmp_path / "two") in str(caught.value)
    finally:
        await first.close()
    second = await Store.connect(url=None, data_dir=tmp_path / "two")  # fine once closed
    await second.close()


async def test_embedded_data_dir_held_by_another_process(tmp_path: Path) -> None:
    holder = subprocess.Popen(  # noqa: ASYNC220 (a helper process, started once)
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, clickhouse_connect
                client = clickhouse_connect.get_client(
                    interface="chdb", path={str(tmp_path / "clickhouse")!r}
                )
                print("open", flush=True)
                sys.stdin.read()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"open\n"
        with pytest.raises(StorageError, match="another process") as caught:
            await Store.connect(url=None, data_dir=tmp_path)
        assert str(tmp_path / "clickhouse") in str(caught.value)
    finally:
        holder.kill()
        holder.wait()


async def test_http_store_recovers_after_clickhouse_restarts(
    clickhouse_process_factory: Callable[[], ClickHouseProcess], tmp_path: Path
) -> None:
    server = clickhouse_process_factory()
    store = await Store.connect(url=server.url, data_dir=tmp_path, database="st")
    try:
        await make_events(store)
        server.stop()
        assert await store.ping() is False
        with pytest.raises(StorageError, match=f"127.0.0.1:{server.port}"):
            await store.query_rows("SELECT count() FROM events")
        server.start()
        assert await store.ping() is True
        assert await store.query_rows("SELECT count() FROM events") == [(2,)]
    finally:
        await store.close()
