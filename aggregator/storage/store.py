"""One async door to ClickHouse: a server over HTTP(S), or the embedded chDB engine.

With a URL, :class:`Store` uses clickhouse-connect's aiohttp client. Without one, it runs
clickhouse-connect's chDB backend (the real ClickHouse engine, in-process) on a single
worker thread, since chDB has no async client. chDB allows one engine data path per
process at a time (a second path may be opened after the first is closed) and one process
per data path (another fails to lock ``<dir>/status``).

Every failure surfaces as :class:`collector.errors.StorageError`. Its message names the
server (without credentials) or the data dir, the statement (our own SQL text; values are
always bound server-side as ``{name:Type}`` parameters) and ClickHouse's error name and
code, never the server's free-text message, which can quote row data.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import OperationalError

from aggregator.storage.cluster_schema import ClusterSchema
from collector.errors import StorageError

_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FORMAT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,39}")
_CHDB_CHUNK = 64 * 1024
# On a cluster an insert goes through a Distributed table. ClickHouse's default queues a
# block bound for a remote shard in that table's folder on the local disk and sends it
# later: rows a purge could neither see nor delete, landing after its receipt (privacy
# invariant 4). Written through instead: the insert returns once its shards have it, or
# fails and the writer spools the batch.
CLUSTER_INSERT_SETTINGS: dict[str, Any] = {"distributed_foreground_insert": 1}


def _redact(url: str) -> str:
    """``scheme://host:port`` of a URL: no user, password, path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "<unparsable ClickHouse URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _statement_head(sql: str) -> str:
    """The start of our own SQL text, on one line, to say which statement failed."""
    head = " ".join(sql.split())
    return head if len(head) <= 80 else head[:77] + "..."


def _reason(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """A cause safe to show: ClickHouse's error name and code, or a transport message.

    Server errors (those with a code) are reduced to name and code, because ClickHouse's
    text may quote rows. Only transport failures keep their message, scrubbed of secrets.
    """
    code = getattr(exc, "code", None)
    name = getattr(exc, "name", None)
    if code is not None or name is not None:
        return f"{name or 'error'} (code {code})" if code is not None else str(name)
    if isinstance(exc, OSError | OperationalError):
        text = " ".join(str(exc).split())[:300]
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return type(exc).__name__


def _chdb_open_reason(exc: BaseException) -> str:
    """Why the embedded engine did not open (its messages hold paths, never rows)."""
    text = " ".join(str(exc).split())
    if "already initialized with path" in text:
        return (
            "this process already has another embedded data dir open "
            "(chDB allows one at a time; close that store first)"
        )
    if "Error initializing EmbeddedServer" in text or "Cannot lock file" in text:
        return "another process is probably using this data dir (chDB allows one per data dir)"
    return f"{type(exc).__name__}: {text[:300]}"


class Store:
    """ClickHouse for the aggregator. Build with :meth:`connect`; ``close`` when done."""

    def __init__(
        self,
        *,
        database: str,
        where: str,
        async_client: Any = None,
        sync_client: Any = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._database = database
        self._where = where
        self._async = async_client
        self._sync = sync_client
        self._executor = executor
        self._closed = False
        # The ClickHouse cluster the schema is spread over (setting clickhouse_cluster), or
        # None: one server or the embedded engine. Read by migrate.py and purge.py.
        self.cluster: ClusterSchema | None = None

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        *,
        url: str | None,
        data_dir: Path,
        database: str = "streamtally",
        cluster: str = "",
    ) -> Store:
        """Connect to ``url`` (``http(s)://user:pass@host:port``) or the embedded engine.

        The database is created if missing and used for every statement. ``cluster``: the
        name of a ClickHouse cluster (``<remote_servers>``) the schema is spread over, for
        ``url`` only (see aggregator/storage/cluster_schema.py).
        """
        if not _DATABASE_NAME.fullmatch(database):
            raise StorageError(
                "database: a ClickHouse database name is letters, digits and '_' "
                "(not starting with a digit), at most 63 characters"
            )
        if cluster and not url:
            raise StorageError(
                "clickhouse_cluster needs clickhouse_url: the embedded engine is one node"
            )
        schema = ClusterSchema(cluster, database) if cluster else None
        store = await (cls._connect_http(url, database) if url else cls._connect_chdb(data_dir))
        store._database = database
        store.cluster = schema
        try:
            await store._ensure_database(database)
        except BaseException:
            await store.close()
            raise
        return store

    @classmethod
    async def _connect_http(cls, url: str, database: str) -> Store:
        where = _redact(url)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise StorageError(f"cannot parse the ClickHouse URL {where}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(
                f"the ClickHouse URL must look like http(s)://user:password@host:port, got {where}"
            )
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else ""
        try:
            client = await clickhouse_connect.get_async_client(
                host=parts.hostname,
                port=port,
                username=username,
                password=password,
                secure=parts.scheme == "https",
                connect_timeout=5,
                send_receive_timeout=300,
            )
        except Exception as exc:
            secrets = [s for s in (password, parts.password, username, parts.username) if s]
            raise StorageError(
                f"cannot connect to ClickHouse at {where}: {_reason(exc, secrets)}"
            ) from None
        return cls(database=database, where=where, async_client=client)

    @classmethod
    async def _connect_chdb(cls, data_dir: Path) -> Store:
        path = (Path(data_dir) / "clickhouse").resolve()
        where = f"the embedded ClickHouse in {path}"
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chdb")

        def open_engine() -> Any:
            path.mkdir(parents=True, exist_ok=True)
            # The path keyword, not a chdb:/// DSN: the DSN's path is taken without unquoting.
            return clickhouse_connect.get_client(interface="chdb", path=str(path))

        try:
            client = await asyncio.get_running_loop().run_in_executor(executor, open_engine)
        except Exception as exc:
            executor.shutdown(wait=False)
            raise StorageError(f"cannot open {where}: {_chdb_open_reason(exc)}") from None
        return cls(database="default", where=where, sync_client=client, executor=executor)

    async def _ensure_database(self, database: str) -> None:
        exists = await self.query_rows(
            "SELECT count() FROM system.databases WHERE name = {db:String}", {"db": database}
        )
        if not exists or not exists[0][0]:
            await self.command("CREATE DATABASE IF NOT EXISTS {db:Identifier}", {"db": database})
        client = self._async if self._async is not None else self._sync
        client.database = database

    # ---- properties -----------------------------------------------------------------------

    @property
    def database(self) -> str:
        return self._database

    @property
    def embedded(self) -> bool:
        return self._sync is not None

    @property
    def where(self) -> str:
        """Where the data lives, safe to show: ``http://host:port`` or the data dir."""
        return self._where

    # ---- statements -----------------------------------------------------------------------

    async def command(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Any:
        """Run a statement (DDL, ALTER, ...); returns its short result, if any."""
        with self._errors(f"the statement `{_statement_head(sql)}`"):
            return await self._call("command", sql, parameters=parameters, settings=settings)

    async def query_rows(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        with self._errors(f"the query `{_statement_head(sql)}`"):
            result = await self._call("query", sql, parameters=parameters, settings=settings)
            return [tuple(row) for row in result.result_rows]

    async def query_dicts(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        with self._errors(f"the query `{_statement_head(sql)}`"):
            result = await self._call("query", sql, parameters=parameters, settings=settings)
            return [dict(row) for row in result.named_results()]

    async def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        column_names: Sequence[str],
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Insert rows; ``settings`` may carry e.g. ``insert_deduplication_token``."""
        if not rows:
            return
        if self.cluster is not None:
            settings = {**CLUSTER_INSERT_SETTINGS, **(settings or {})}
        with self._errors(f"an insert into {table}"):
            await self._call(
                "insert",
                table,
                rows,
                column_names=list(column_names),
                settings=settings,
            )

    async def raw_stream(
        self, sql: str, fmt: str, parameters: dict[str, Any] | None = None
    ) -> AsyncIterator[bytes]:
        """The result formatted by ClickHouse (``CSV``, ``JSONEachRow``, ``Parquet``...), in chunks.

        Over HTTP the bytes stream through; the embedded engine buffers the whole result.
        """
        if not _FORMAT_NAME.fullmatch(fmt):
            raise StorageError("fmt: a ClickHouse format name is letters and digits")
        what = f"the export `{_statement_head(sql)}`"
        if self._async is not None:
            with self._errors(what):
                context = await self._async.raw_stream(sql, parameters=parameters, fmt=fmt)
            with self._errors(what):
                async with context as chunks:
                    async for chunk in chunks:
                        yield bytes(chunk)
            return
        with self._errors(what):
            data: bytes = await self._call("raw_query", sql, parameters=parameters, fmt=fmt)
        for start in range(0, len(data), _CHDB_CHUNK):
            yield data[start : start + _CHDB_CHUNK]

    async def ping(self) -> bool:
        """Whether ClickHouse answers now. Never raises."""
        if self._closed:
            return False
        try:
            return bool(await self._call("ping"))
        except Exception:
            return False

    async def close(self) -> None:
        """Release the connection pool or the embedded engine (so its data dir can be reopened)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._async is not None:
                await self._async.close()
            elif self._sync is not None and self._executor is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, self._sync.close)
        except Exception:
            pass  # closing is best effort; nothing left to protect
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False)

    # ---- internals ------------------------------------------------------------------------

    async def _call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call the same-named clickhouse-connect method: awaited, or on the chDB thread."""
        if self._closed:
            raise StorageError(f"the store for {self._where} is closed")
        if self._async is not None:
            return await getattr(self._async, method)(*args, **kwargs)
        bound: Callable[[], Any] = partial(getattr(self._sync, method), *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, bound)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except Exception as exc:
            self._raise(what, exc)

    def _raise(self, what: str, exc: BaseException) -> NoReturn:
        # `from None`: the driver's exception text can quote rows; keep it out of tracebacks.
        raise StorageError(f"ClickHouse at {self._where} failed {what}: {_reason(exc)}") from None
