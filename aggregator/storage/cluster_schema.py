"""The migrations' DDL for a ClickHouse cluster (setting ``clickhouse_cluster``).

Each table ``t`` of a migration becomes two on every node of the cluster:

- ``t_local``: the data, ``Replicated<Engine>('/clickhouse/tables/{shard}/{database}/t',
  '{replica}', <the engine's own arguments>)`` — the replicas of a shard agree through
  ClickHouse Keeper; ``{shard}`` and ``{replica}`` are each server's ``<macros>``;
- ``t``: ``Distributed(<cluster>, <database>, t_local, cityHash64(account_id))``, the table
  the code reads and writes by its usual name. Sharding by account keeps every version of a
  row on one shard, so ``FINAL`` through the Distributed table is exact.

Statements go ``ON CLUSTER <cluster>`` (ClickHouse's distributed DDL, through Keeper).
``ALTER TABLE t ADD COLUMN`` changes both tables; ``MODIFY SETTING`` the local one only.
A statement of another shape is refused with a :class:`StorageError`, so a new migration
cannot silently run on one node only: teach :func:`cluster_statements` its shape first.

``replicated=False`` is the same layout without Keeper — plain engines, no ``ON CLUSTER``,
run on each node by hand — which is also what the tests apply to the chDB test server
(its engine, clickhouse-local's, has neither Keeper nor a distributed DDL worker).

The single-node path never comes here: without a cluster the statements run as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from collector.errors import StorageError

LOCAL_SUFFIX = "_local"
SHARDING_KEY = "cityHash64(account_id)"
KEEPER_PATH = "/clickhouse/tables/{shard}/{database}/"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_CREATE = re.compile(
    r"CREATE TABLE IF NOT EXISTS (?P<table>\w+)\s*\n?\((?P<columns>.*?)\)\s*\n"
    r"ENGINE = (?P<engine>\w*MergeTree)(?:\((?P<args>[^()]*)\))?(?P<rest>.*)",
    re.DOTALL,
)
_ALTER = re.compile(
    r"ALTER TABLE (?P<table>\w+) (?P<action>ADD COLUMN|MODIFY SETTING) (?P<rest>.*)", re.DOTALL
)
_ORDER_BY = re.compile(r"ORDER BY \(?(?P<first>\w+)")


def check_cluster_name(value: str) -> str | None:
    """The setting's check: empty (no cluster) or a name as in ``<remote_servers>``."""
    if value == "" or _NAME.fullmatch(value):
        return None
    return "a cluster name of <remote_servers> (letters, digits, '_'), or empty for none"


@dataclass(frozen=True, slots=True)
class ClusterSchema:
    """How to write DDL for ``cluster`` in ``database`` (see the module docstring)."""

    cluster: str
    database: str
    replicated: bool = True

    def __post_init__(self) -> None:
        for what, value in (("cluster", self.cluster), ("database", self.database)):
            if not _NAME.fullmatch(value):
                raise StorageError(f"{what} {value!r}: letters, digits and '_' only")

    @property
    def on_cluster(self) -> str:
        """`` ON CLUSTER name`` (with Keeper), or nothing."""
        return f" ON CLUSTER {self.cluster}" if self.replicated else ""

    @staticmethod
    def local(table: str) -> str:
        """The name of a table's data on each node."""
        return table + LOCAL_SUFFIX

    def cluster_statements(self, statement: str) -> tuple[str, ...]:
        """The statements that do on the cluster what ``statement`` does on one node."""
        text = statement.strip()
        create = _CREATE.fullmatch(text)
        if create is not None:
            return self._create(create)
        alter = _ALTER.fullmatch(text)
        if alter is not None:
            table, action, rest = alter["table"], alter["action"], alter["rest"]
            local = f"ALTER TABLE {self.local(table)}{self.on_cluster} {action} {rest}"
            if action == "MODIFY SETTING":
                return (local,)
            return (local, f"ALTER TABLE {table}{self.on_cluster} {action} {rest}")
        head = " ".join(text.split())[:60]
        raise StorageError(
            f"the migration statement `{head}` has no cluster form: "
            "aggregator/storage/cluster_schema.py knows CREATE TABLE IF NOT EXISTS … "
            "ENGINE = …MergeTree, "
            "ALTER TABLE … ADD COLUMN and ALTER TABLE … MODIFY SETTING"
        )

    def _create(self, create: re.Match[str]) -> tuple[str, str]:
        table, columns, engine = create["table"], create["columns"], create["engine"]
        args, rest = create["args"], create["rest"]
        local = self.local(table)
        if self.replicated:
            keeper = [f"'{KEEPER_PATH}{table}'", "'{replica}'"]
            engine_sql = f"Replicated{engine}({', '.join(keeper + ([args] if args else []))})"
        else:
            engine_sql = engine + (f"({args})" if args is not None else "")
        key = SHARDING_KEY
        if not re.search(r"^\s*account_id\s", columns, re.MULTILINE):
            first = _ORDER_BY.search(rest)
            if first is None:
                raise StorageError(f"table {table}: no account_id and no ORDER BY to shard by")
            key = f"cityHash64({first['first']})"
        return (
            f"CREATE TABLE IF NOT EXISTS {local}{self.on_cluster}\n({columns})\n"
            f"ENGINE = {engine_sql}{rest}",
            f"CREATE TABLE IF NOT EXISTS {table}{self.on_cluster} AS {local}\n"
            f"ENGINE = Distributed({self.cluster}, {self.database}, {local}, {key})",
        )
