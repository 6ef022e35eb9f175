"""The migrations' cluster DDL (setting clickhouse_cluster), checked statically for every
migration: each statement runs ON CLUSTER, each table's data is in a Replicated… engine with
a Keeper path per shard and a replica macro, and each table has a Distributed table of its
own name sharded by account. The single-node statements are unchanged.

(Applied against the real test server in its non-replicated form:
tests/integration/test_clickhouse_cluster.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aggregator.storage.cluster_schema import ClusterSchema, check_cluster_name
from aggregator.storage.migrate import Migration, history_table_sql, load_migrations, statements_for
from aggregator.storage.store import Store
from collector.errors import StorageError

CLUSTER = "streamtally_cluster"
DATABASE = "stats_db"
SCHEMA = ClusterSchema(CLUSTER, DATABASE)
MIGRATIONS = load_migrations()
HISTORY = Migration(0, "schema_migrations", tuple(s.strip() for s in history_table_sql()))

# Parsed here on their own, not with aggregator/storage/cluster_schema.py's patterns.
HEAD = re.compile(
    r"^(?P<verb>CREATE TABLE IF NOT EXISTS|ALTER TABLE) (?P<table>\w+)(?P<tail>.*)", re.S
)
ENGINE = re.compile(r"\nENGINE = (?P<engine>\w+)(?:\((?P<args>.*?)\))?(?=\n|$)")


def engine_of(sql: str) -> tuple[str, str | None]:
    match = ENGINE.search(sql)
    assert match is not None, sql
    return match["engine"], match["args"]


def columns_of(sql: str) -> str:
    return sql[sql.index("(") : sql.index("\nENGINE")]


def created(statements: list[str] | tuple[str, ...]) -> dict[str, str]:
    """CREATE statements by table name."""
    out = {}
    for sql in statements:
        head = HEAD.match(sql)
        assert head is not None, sql
        if head["verb"].startswith("CREATE"):
            out[head["table"]] = sql
    return out


@pytest.mark.parametrize("migration", [HISTORY, *MIGRATIONS], ids=lambda m: m.name)
def test_without_a_cluster_the_statements_run_as_written(migration: Migration) -> None:
    assert statements_for(migration.statements, None) == list(migration.statements)


@pytest.mark.parametrize("migration", [HISTORY, *MIGRATIONS], ids=lambda m: m.name)
def test_every_cluster_statement_runs_on_cluster(migration: Migration) -> None:
    for sql in statements_for(migration.statements, SCHEMA):
        head = HEAD.match(sql)
        assert head is not None, sql
        assert head["tail"].startswith(f" ON CLUSTER {CLUSTER}\n") or head["tail"].startswith(
            f" ON CLUSTER {CLUSTER} "
        ), sql


@pytest.mark.parametrize("migration", [HISTORY, *MIGRATIONS], ids=lambda m: m.name)
def test_every_table_is_replicated_and_distributed_by_account(migration: Migration) -> None:
    single = created(migration.statements)
    cluster = created(statements_for(migration.statements, SCHEMA))
    assert set(cluster) == {t for name in single for t in (name, name + "_local")}
    for table, sql in single.items():
        engine, args = engine_of(sql)
        local = cluster[table + "_local"]
        assert columns_of(local) == columns_of(sql)  # the same columns
        assert (
            local[local.index("\nENGINE") :].split("\n")[2:]
            == sql[sql.index("\nENGINE") :].split("\n")[2:]
        )  # the same PARTITION BY, ORDER BY, TTL, SETTINGS
        local_engine, local_args = engine_of(local)
        assert local_engine == f"Replicated{engine}", local
        assert local_args is not None
        path, replica, *rest = [a.strip() for a in local_args.split(",")]
        assert path == f"'/clickhouse/tables/{{shard}}/{{database}}/{table}'"
        assert replica == "'{replica}'"
        assert rest == ([a.strip() for a in args.split(",")] if args else [])

        distributed = cluster[table]
        assert f" AS {table}_local\n" in distributed
        d_engine, d_args = engine_of(distributed)
        assert d_engine == "Distributed"
        assert d_args is not None
        name, database, target, key = [a.strip() for a in d_args.split(",", 3)]
        assert (name, database, target) == (CLUSTER, DATABASE, f"{table}_local")
        has_account = re.search(r"^\s*account_id String,$", sql, re.M) is not None
        assert key == ("cityHash64(account_id)" if has_account else "cityHash64(version)")


def test_every_data_table_is_sharded_by_account() -> None:
    """Every table a migration creates has account_id (only the history table has not)."""
    keys = {}
    for migration in MIGRATIONS:
        for table, sql in created(statements_for(migration.statements, SCHEMA)).items():
            if not table.endswith("_local"):
                keys[table] = engine_of(sql)[1]
    assert {"accounts", "api_tokens", "cells", "audit", "purges", "privacy_budget"} <= set(keys)
    for table, args in keys.items():
        assert args is not None
        assert args.endswith(", cityHash64(account_id)"), table


@pytest.mark.parametrize("migration", [HISTORY, *MIGRATIONS], ids=lambda m: m.name)
def test_alters_reach_the_data_and_the_distributed_table(migration: Migration) -> None:
    cluster = statements_for(migration.statements, SCHEMA)
    for sql in migration.statements:
        head = HEAD.match(sql)
        assert head is not None
        if head["verb"] != "ALTER TABLE":
            continue
        table, action = head["table"], head["tail"].strip()
        on = f" ON CLUSTER {CLUSTER} {action}"
        assert f"ALTER TABLE {table}_local{on}" in cluster
        if action.startswith("ADD COLUMN"):  # both: the Distributed table has the columns too
            assert f"ALTER TABLE {table}{on}" in cluster
        else:  # table settings belong to the MergeTree table only
            assert action.startswith("MODIFY SETTING")
            assert f"ALTER TABLE {table}{on}" not in cluster


def test_no_table_of_the_cluster_form_is_left_unreplicated() -> None:
    for migration in [HISTORY, *MIGRATIONS]:
        for sql in created(statements_for(migration.statements, SCHEMA)).values():
            engine, _ = engine_of(sql)
            assert engine == "Distributed" or engine.startswith("Replicated"), sql


def test_the_form_without_keeper_has_no_on_cluster_and_plain_engines() -> None:
    plain = ClusterSchema(CLUSTER, DATABASE, replicated=False)
    for migration in [HISTORY, *MIGRATIONS]:
        single = created(migration.statements)
        for sql in statements_for(migration.statements, plain):
            assert "ON CLUSTER" not in sql, sql
            assert "Replicated" not in sql, sql
        for table, sql in created(statements_for(migration.statements, plain)).items():
            if table.endswith("_local"):
                assert engine_of(sql) == engine_of(single[table[: -len("_local")]])


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO accounts (account_id) VALUES ('a')",
        "DROP TABLE cells",
        "ALTER TABLE cells DROP COLUMN views",
        "CREATE TABLE IF NOT EXISTS m (a UInt8) ENGINE = Memory",
        "CREATE VIEW v AS SELECT 1",
    ],
    ids=["insert", "drop", "drop-column", "memory-table", "view"],
)
def test_a_statement_without_a_cluster_form_is_refused(statement: str) -> None:
    with pytest.raises(StorageError, match="no cluster form"):
        SCHEMA.cluster_statements(statement)


@pytest.mark.parametrize(
    ("value", "ok"),
    [("", True), ("streamtally", True), ("st_2x2", True), ("a-b", False),
     ("x ON CLUSTER y", False), ("c; DROP DATABASE d", False), ("{cluster}", False)],
    ids=["empty", "name", "underscore-digits", "dash", "space", "injection", "macro"],
)  # fmt: skip
def test_the_cluster_setting_takes_a_plain_name(value: str, ok: bool) -> None:
    assert (check_cluster_name(value) is None) is ok


async def test_the_embedded_engine_cannot_be_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="clickhouse_cluster needs clickhouse_url"):
        await Store.connect(url=None, data_dir=tmp_path, cluster="streamtally")
