"""Fixtures shared by every test package. Keep each section self-contained.

ClickHouse
----------
Tests talk to a real ClickHouse: chdb-core's engine serving the HTTP interface from a child
process (``tests/chserver.py``, recipe in ``docs/clickhouse.md``).

- ``clickhouse_server`` (session): one server for the whole run (starting one takes ~0.5 s).
  Never stop it in a test; use ``clickhouse_process_factory`` for that.
- ``ch_database`` (function): a fresh, uniquely named database on that server, dropped
  afterwards. Yields ``ChDatabase(url, database)``, which unpacks as ``url, database``.
- ``store`` (function, parametrised ``http``/``chdb``): a connected
  ``aggregator.storage.store.Store``
  on each backend (a fresh database on the shared server; a fresh embedded data dir), closed
  after the test. Request it to run a test against both backends.
- ``clickhouse_cluster_server`` (session): a second server that is also a one-node ClickHouse
  cluster named ``CLICKHOUSE_CLUSTER`` (``<remote_servers>``: one shard, one replica, itself);
  ``clickhouse_cluster_db`` (function): a fresh database on it. ``without_keeper``
  (function): stores connected with ``cluster=`` build the schema's form without Keeper,
  the only one this engine can run (docs/clickhouse.md).
- ``clickhouse_process_factory`` (function): makes private :class:`ClickHouseProcess` servers
  (own port and data dir) with ``start()/stop()/kill()/restart()`` for fault tests; all are
  stopped at the end of the test. ``from tests.chserver import ClickHouseProcess`` also works.

The embedded backend (``clickhouse-connect``'s chDB, used by ``Store`` without a URL) lives in
the test process itself, with these limits (checked with chdb-core 26.9):

- one engine data path per process *at a time*: opening a second path while a client on the
  first is open fails; after every client of the first path is closed, another path opens
  fine. So an embedded ``Store`` must be closed at the end of the test that opened it, and
  tests must not hold two embedded stores on different paths at once;
- one process per data path: the server child processes use their own data dirs.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import clickhouse_connect
import pytest

import aggregator.storage.store
from aggregator.storage.cluster_schema import ClusterSchema
from aggregator.storage.store import Store
from tests.chserver import ClickHouseProcess

__all__ = ["CLICKHOUSE_CLUSTER", "ChDatabase", "ClickHouseProcess"]

CLICKHOUSE_CLUSTER = "streamtally_test"


# ---- ClickHouse -------------------------------------------------------------------------------


class ChDatabase(NamedTuple):
    url: str
    database: str


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseProcess]:
    """The session's ClickHouse HTTP server: ``.url``, ``.host``, ``.port``."""
    server = ClickHouseProcess(tmp_path_factory.mktemp("clickhouse") / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ch_database(clickhouse_server: ClickHouseProcess) -> Iterator[ChDatabase]:
    """A new empty database on the shared server, dropped after the test."""
    if not clickhouse_server.running:
        clickhouse_server.start()  # a test stopped the shared server after all: bring it back
    database = f"test_{uuid.uuid4().hex[:16]}"
    client = clickhouse_connect.get_client(host=clickhouse_server.host, port=clickhouse_server.port)
    try:
        client.command(f"CREATE DATABASE {database}")
        try:
            yield ChDatabase(clickhouse_server.url, database)
        finally:
            client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    finally:
        client.close()


@pytest.fixture(params=["http", "chdb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A connected Store on each backend: ``http`` (shared server) and ``chdb`` (embedded)."""
    if request.param == "http":
        url, database = request.getfixturevalue("ch_database")
        connected = await Store.connect(url=url, data_dir=tmp_path, database=database)
    else:
        connected = await Store.connect(url=None, data_dir=tmp_path)
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
def clickhouse_process_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[], ClickHouseProcess]]:
    """``make()`` returns a started private server; every one is stopped after the test."""
    made: list[ClickHouseProcess] = []

    def make() -> ClickHouseProcess:
        server = ClickHouseProcess(tmp_path_factory.mktemp("clickhouse-private") / "data")
        made.append(server)
        server.start()
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop()


# ---- a one-node ClickHouse cluster -------------------------------------------------------------


@pytest.fixture(scope="session")
def clickhouse_cluster_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClickHouseProcess]:
    """A ClickHouse server that is also a one-node cluster named CLICKHOUSE_CLUSTER."""
    server = ClickHouseProcess(
        tmp_path_factory.mktemp("ch-cluster") / "data", cluster=CLICKHOUSE_CLUSTER
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def clickhouse_cluster_db(clickhouse_cluster_server: ClickHouseProcess) -> Iterator[ChDatabase]:
    """A new empty database on the cluster server, dropped after the test."""
    server = clickhouse_cluster_server
    database = f"test_{uuid.uuid4().hex[:16]}"
    client = clickhouse_connect.get_client(host=server.host, port=server.port)
    try:
        client.command(f"CREATE DATABASE {database}")
        try:
            yield ChDatabase(server.url, database)
        finally:
            client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    finally:
        client.close()


@pytest.fixture
def without_keeper(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stores connected with ``cluster=`` build ``ClusterSchema(replicated=False)``."""
    monkeypatch.setattr(
        aggregator.storage.store,
        "ClusterSchema",
        functools.partial(ClusterSchema, replicated=False),
    )
