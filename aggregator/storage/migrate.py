"""Numbered SQL migrations: ``aggregator/storage/migrations/NNNN_name.sql``, applied once, in order.

Each file holds one or more statements; a statement ends on a line whose text ends with
``;`` (``--`` comment lines are dropped). Statements run in the store's database, so they
name tables without a database, and must be idempotent (``CREATE TABLE IF NOT EXISTS``,
``ADD COLUMN IF NOT EXISTS``): a migration interrupted half way simply runs again.
``schema_migrations`` records what ran (version, name, applied_at).

With a ClickHouse cluster (``store.cluster``, setting ``clickhouse_cluster``) each statement
runs in its cluster form instead (aggregator/storage/cluster_schema.py): replicated local tables and
Distributed tables ``ON CLUSTER``. Without one, the statements run exactly as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from aggregator.storage.cluster_schema import ClusterSchema
from aggregator.storage.store import Store
from collector.errors import StorageError

_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<slug>[a-z0-9_]+)\.sql")

_HISTORY_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the file's stem, e.g. "0001_accounts"
    statements: tuple[str, ...]


def split_statements(sql: str) -> tuple[str, ...]:
    """The statements of a migration file, without comment lines or the closing ``;``."""
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        if stripped.endswith(";"):
            current.append(line.rstrip()[:-1])
            statement = "\n".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
        else:
            current.append(line.rstrip())
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return tuple(statements)


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """The migrations shipped in ``aggregator/storage/migrations`` (or ``directory``), by
    version."""
    folder: Traversable | Path = (
        directory if directory is not None else files("aggregator.storage").joinpath("migrations")
    )
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise StorageError(
                    f"migration {entry.name}: file names are NNNN_name.sql "
                    "(four digits, lowercase letters, digits, '_')"
                )
            continue
        version = int(match["version"])
        if version in found:
            raise StorageError(
                f"migrations {found[version].name} and {entry.name[:-4]} share version {version}"
            )
        statements = split_statements(entry.read_text(encoding="utf-8"))
        if not statements:
            raise StorageError(f"migration {entry.name} has no statement")
        found[version] = Migration(version, entry.name[:-4], statements)
    return [found[version] for version in sorted(found)]


def statements_for(statements: Iterable[str], cluster: ClusterSchema | None) -> list[str]:
    """What to run for ``statements``: themselves, or their cluster form."""
    if cluster is None:
        return list(statements)
    return [sql for statement in statements for sql in cluster.cluster_statements(statement)]


def history_table_sql(cluster: ClusterSchema | None = None) -> list[str]:
    """The statement(s) creating ``schema_migrations``."""
    return statements_for([_HISTORY_TABLE], cluster)


async def applied_versions(store: Store) -> set[int]:
    """Versions recorded in ``schema_migrations`` (created if missing)."""
    for statement in history_table_sql(store.cluster):
        await store.command(statement)
    rows = await store.query_rows("SELECT DISTINCT version FROM schema_migrations")
    return {int(row[0]) for row in rows}


async def migrate(store: Store, migrations: Iterable[Migration] | None = None) -> list[str]:
    """Apply every migration not yet recorded, lowest version first; the names applied now."""
    pending: Sequence[Migration] = sorted(
        load_migrations() if migrations is None else migrations, key=lambda m: m.version
    )
    done = await applied_versions(store)
    applied: list[str] = []
    for migration in pending:
        if migration.version in done:
            continue
        for statement in statements_for(migration.statements, store.cluster):
            await store.command(statement)
        await store.insert(
            "schema_migrations",
            [[migration.version, migration.name, datetime.now(UTC)]],
            column_names=["version", "name", "applied_at"],
        )
        applied.append(migration.name)
    return applied
