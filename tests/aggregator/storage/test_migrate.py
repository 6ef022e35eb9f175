"""Migrations: numbered SQL files, each applied once, in order, recorded in schema_migrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.storage.migrate import load_migrations, migrate, split_statements
from aggregator.storage.store import Store
from collector.errors import StorageError


def write(folder: Path, name: str, sql: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(sql, encoding="utf-8")


async def recorded(store: Store) -> list[tuple[int, str]]:
    rows = await store.query_rows(
        "SELECT version, name FROM schema_migrations FINAL ORDER BY version"
    )
    return [(int(version), str(name)) for version, name in rows]


async def test_shipped_migrations_apply_once(store: Store) -> None:
    shipped = [m.name for m in load_migrations()]
    assert shipped[0] == "0001_accounts"

    assert await migrate(store) == shipped
    for table in ("accounts", "api_tokens", "schema_migrations"):
        assert await store.query_rows("EXISTS TABLE {t:Identifier}", {"t": table}) == [(1,)]
    assert await migrate(store) == []
    assert [name for _, name in await recorded(store)] == shipped


async def test_applies_in_version_order_and_only_new_ones_later(
    store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    # Written out of order; 0002 depends on 0001 and 0010 on 0002.
    write(folder, "0010_three.sql", "ALTER TABLE t ADD COLUMN IF NOT EXISTS c UInt8 DEFAULT b + 1;")
    write(folder, "0002_two.sql", "ALTER TABLE t ADD COLUMN IF NOT EXISTS b UInt8 DEFAULT a + 1;")
    write(
        folder,
        "0001_one.sql",
        "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = MergeTree ORDER BY a;",
    )
    write(folder, "README.txt", "not a migration")

    assert await migrate(store, load_migrations(folder)) == ["0001_one", "0002_two", "0010_three"]
    assert await recorded(store) == [(1, "0001_one"), (2, "0002_two"), (10, "0010_three")]

    write(folder, "0011_four.sql", "INSERT INTO t (a) VALUES (1);")
    assert await migrate(store, load_migrations(folder)) == ["0011_four"]
    assert await migrate(store, load_migrations(folder)) == []
    assert await store.query_rows("SELECT a, b, c FROM t") == [(1, 2, 3)]


async def test_a_failed_migration_is_not_recorded_and_runs_again(
    store: Store, tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    write(folder, "0001_one.sql", "CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = Memory;")
    write(
        folder,
        "0002_broken.sql",
        "CREATE TABLE IF NOT EXISTS u (a UInt8) ENGINE = Memory;\nSELECT * FROM missing_table;",
    )
    with pytest.raises(StorageError, match="missing_table"):
        await migrate(store, load_migrations(folder))
    assert await recorded(store) == [(1, "0001_one")]

    write(folder, "0002_broken.sql", "CREATE TABLE IF NOT EXISTS u (a UInt8) ENGINE = Memory;")
    assert await migrate(store, load_migrations(folder)) == ["0002_broken"]


def test_statements_split_on_lines_ending_with_semicolon() -> None:
    sql = """
-- a comment; with a semicolon
CREATE TABLE IF NOT EXISTS a
(
    x UInt8  -- trailing comment
)
ENGINE = Memory;

CREATE TABLE IF NOT EXISTS b (y String DEFAULT 'a;b') ENGINE = Memory
;
SELECT 1
"""
    assert split_statements(sql) == (
        "CREATE TABLE IF NOT EXISTS a\n(\n    x UInt8  -- trailing comment\n)\nENGINE = Memory",
        "CREATE TABLE IF NOT EXISTS b (y String DEFAULT 'a;b') ENGINE = Memory",
        "SELECT 1",
    )


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({"1_short.sql": "SELECT 1;"}, "NNNN_name.sql", id="bad-name"),
        pytest.param({"0001_Upper.sql": "SELECT 1;"}, "NNNN_name.sql", id="uppercase"),
        pytest.param(
            {"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"}, "share version 1", id="dup"
        ),
        pytest.param({"0001_empty.sql": "-- nothing\n"}, "no statement", id="empty"),
    ],
)
def test_malformed_migration_folders_are_refused(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, sql in files.items():
        write(tmp_path, name, sql)
    with pytest.raises(StorageError, match=message):
        load_migrations(tmp_path)


async def test_shipped_statements_can_run_twice(store: Store) -> None:
    """A migration interrupted half way runs again from its first statement."""
    for migration in load_migrations():
        for statement in migration.statements:
            await store.command(statement)
            await store.command(statement)
