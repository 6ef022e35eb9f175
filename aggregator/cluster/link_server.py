"""The aggregator shard's end of the cluster link (``collector/linkproto.py``).

Collectors connect to ``--listen`` and stream the events of this shard's accounts; the
shard checks each event's account (known, not deleted, owned here), counts each event once
whatever collector it came through and however often it was sent (the owner's
:class:`Deduper`), hands the rest to the :class:`Service` and acknowledges the batch. While
the service cannot keep events safely (spool full) acknowledgements wait: the collectors'
buffers fill and their reports for this shard's accounts get 503.

The shard is the one truth for what collectors need of its accounts:

- its viewer secrets (the session secret of this run, the secret of each UTC day, drawn
  here before the day begins and destroyed after it and its grace period), sent sealed
  under each link's session key, in memory only;
- the account directory, re-read from ClickHouse every ``accounts_poll_seconds`` and sent
  to every collector when it changed (so accounts, origins, k and deletions made on any
  aggregator reach every collector within a few seconds). An account deleted anywhere is
  forgotten here at once and its events are refused from then on.

Peer aggregators use the same link (role ``peer``) to call ``flush`` and ``purge`` on
the shard (:mod:`aggregator.cluster_api`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import Counter

from aggregator.service import Service
from aggregator.storage.accounts_store import AccountStore
from collector import linkproto
from collector.config import CollectorConfig
from collector.dedupe import Deduper
from collector.errors import HTTPProblem, StorageError
from collector.linkconfig import ClusterConfig, server_tls
from collector.ownership import Shard, parse_shard
from collector.viewer import ViewerKeys

log = logging.getLogger("streamtally.link")

LINK_EVENTS = Counter(
    "streamtally_link_events_total",
    "Events received over the cluster link, by what became of them",
    ["outcome"],
)  # outcome: counted | duplicate | refused
LINK_REFUSED = Counter(
    "streamtally_link_refused_total", "Link connections that did not prove the cluster secret"
)
LOOKAHEAD_SECONDS = 3600.0  # tomorrow's viewer secret exists this long before midnight
HANDSHAKE_SECONDS = 10.0
HEARTBEAT_SECONDS = 5.0
MAX_FRAME_BYTES = 64 * 1024 * 1024
# What a hot restart tells the collectors: back within this long (they hold this shard's
# events meanwhile instead of refusing its reports; each report still waits for its ack).
RESTART_SECONDS = 10.0
BACKLOG = 1024  # collectors' reconnects wait here while a hot restart runs

Call = Callable[[dict[str, Any]], Awaitable[tuple[int, Any]]]


@dataclass(eq=False)
class _Client:
    ws: web.WebSocketResponse
    key: bytes
    role: str
    sent_days: list[Any] = field(default_factory=list)


class LinkServer:
    def __init__(
        self,
        *,
        service: Service,
        accounts: AccountStore,
        config: ClusterConfig,
        collector_config: CollectorConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.cluster_secret is not None
        self.service = service
        self.accounts = accounts
        self.config = config
        self.shard: Shard = parse_shard(config.shard)
        self.secret = config.cluster_secret
        self.viewers = ViewerKeys(collector_config.viewer_key_grace_seconds, clock)
        self.deduper = Deduper(idle_seconds=collector_config.session_idle_seconds)
        self.decoder = linkproto.EventDecoder()
        self.clients: set[_Client] = set()
        self.calls: dict[str, Call] = {}
        self.gone: set[str] = set()  # deleted accounts: never counted again
        self._accounts_frame = b""
        self._refresh_lock = asyncio.Lock()
        # The link's listening socket: made at start (or inherited over a hot restart,
        # set before the app starts); it outlives the listener so a hot restart keeps it.
        self.sock: socket.socket | None = None
        self.handing_over = False  # a hot restart: collectors are told it is coming back
        self.viewers.open_days(LOOKAHEAD_SECONDS)

    # -- connections -----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_FRAME_BYTES)
        await ws.prepare(request)
        client = await self._handshake(ws)
        if client is None:
            return ws
        self.clients.add(client)
        try:
            if client.role == "collector":
                await ws.send_bytes(self._accounts_frame or self._directory_frame())
                await self._send_secrets(client)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                frame = linkproto.unpack(msg.data)
                if frame[0] == "ev":
                    await self.take(frame[2])
                    await ws.send_bytes(linkproto.pack("ack", frame[1]))
                elif frame[0] == "call" and client.role == "peer":
                    status, body = await self._call(str(frame[2]), frame[3])
                    await ws.send_bytes(linkproto.pack("reply", frame[1], status, body))
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            log.warning("link message not understood (%s): link closed", type(exc).__name__)
        except ConnectionError:  # the other end went away: it sends again what was not acked
            pass
        finally:
            self.clients.discard(client)
            await ws.close()
        return ws

    async def _handshake(self, ws: web.WebSocketResponse) -> _Client | None:
        server_nonce = linkproto.nonce()
        await ws.send_bytes(
            linkproto.pack(
                "challenge",
                linkproto.VERSION,
                server_nonce.hex(),
                self.shard.index,
                self.shard.count,
            )
        )
        try:
            msg = await ws.receive(timeout=HANDSHAKE_SECONDS)
            hello = linkproto.unpack(msg.data) if msg.type == aiohttp.WSMsgType.BINARY else []
            role = hello[1] if len(hello) == 4 and hello[0] == "hello" else None
            client_nonce = bytes.fromhex(hello[2]) if role else b""
        except (TimeoutError, ValueError, TypeError):
            role, client_nonce = None, b""
        if (
            role not in linkproto.ROLES
            or len(client_nonce) != linkproto.NONCE_BYTES
            or not linkproto.proof_ok(self.secret, "client", server_nonce, client_nonce, hello[3])
        ):
            LINK_REFUSED.inc()
            await ws.close(code=linkproto.AUTH_FAILED, message=b"cluster secret not proven")
            return None
        mac = linkproto.proof(self.secret, "server", server_nonce, client_nonce)
        await ws.send_bytes(linkproto.pack("welcome", mac))
        key = linkproto.session_key(self.secret, server_nonce, client_nonce)
        return _Client(ws, key, str(role))

    async def _call(self, name: str, args: dict[str, Any]) -> tuple[int, Any]:
        call = self.calls.get(name)
        if call is None:
            return 404, {"detail": f"no call {name!r}"}
        try:
            return await call(args)
        except HTTPProblem as problem:
            return problem.status, problem.problem()
        except StorageError as exc:
            return 503, {"detail": str(exc)}
        except Exception as exc:  # the caller gets an answer, the log the kind of failure
            log.error("link call %s failed: %s", name, type(exc).__name__)
            return 500, {"detail": f"{name} failed on this shard: {type(exc).__name__}"}

    # -- events ----------------------------------------------------------------------------

    async def take(self, batch: list[Any]) -> None:
        """Count a batch: each event of a live account of this shard, once."""
        while not self.service.accepting():  # back-pressure: the ack waits  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        events, accounts = self.decoder.events(batch)
        live = self._live_ids(accounts)
        if accounts - live - self.gone:  # created on another aggregator a moment ago, perhaps
            await self.refresh()
            live = self._live_ids(accounts)
        refused = 0
        if len(live) < len(accounts):
            taken = [ev for ev in events if ev.account_id in live]
            refused, events = len(events) - len(taken), taken
        fresh = self.deduper.fresh(events)
        if fresh:
            self.service.submit(fresh)
        LINK_EVENTS.labels("counted").inc(len(fresh))
        if len(fresh) < len(events):
            LINK_EVENTS.labels("duplicate").inc(len(events) - len(fresh))
        if refused:
            LINK_EVENTS.labels("refused").inc(refused)

    def _live_ids(self, account_ids: set[str]) -> set[str]:
        live = set()
        for account_id in account_ids:
            account = self.accounts.by_id(account_id)
            if (
                account is not None
                and not account.deleted
                and account_id not in self.gone
                and self.shard.owns(account_id)
            ):
                live.add(account_id)
        return live

    # -- what collectors are told ----------------------------------------------------------

    def _directory_frame(self) -> bytes:
        accounts = sorted(self.accounts.accounts(), key=lambda a: a.account_id)
        return linkproto.pack(
            "accounts", self.accounts.version, [linkproto.account_row(a) for a in accounts]
        )

    async def _send_secrets(self, client: _Client) -> None:
        process, days = self.viewers.handover_secrets()
        sealed = linkproto.seal(client.key, linkproto.secrets_plaintext(process, days))
        client.sent_days = sorted(days)
        await client.ws.send_bytes(linkproto.pack("secrets", sealed))

    def forget(self, account_id: str) -> None:
        """Deleted: never counted here again; in-memory state dropped."""
        self.gone.add(account_id)
        self.accounts.forget_in_memory(account_id)
        self.service.forget_account(account_id)

    async def refresh(self) -> None:
        """Re-read the accounts; forget the deleted; tell the collectors what changed; keep
        the viewer secrets of today (and, near midnight, tomorrow) and send them out."""
        async with self._refresh_lock:
            try:
                await self.accounts.load()
            except StorageError as exc:
                log.warning("accounts not re-read: %s", exc)
            for account in self.accounts.accounts():
                if account.deleted and account.account_id not in self.gone:
                    self.forget(account.account_id)
            for account_id in self.gone:
                self.accounts.forget_in_memory(account_id)  # a reload does not revive it
            frame = self._directory_frame()
            changed = frame != self._accounts_frame
            self._accounts_frame = frame
            self.viewers.rotate()
            self.viewers.open_days(LOOKAHEAD_SECONDS)
            days = sorted(self.viewers.handover_secrets()[1])
            for client in list(self.clients):
                if client.role != "collector":
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):
                    if changed:
                        await client.ws.send_bytes(frame)
                    if client.sent_days != days:
                        await self._send_secrets(client)

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx of the shard's public app: the link listener and the refresh loop.
        Registered after the service's, so it stops first (no event after the final flush)."""
        host, port = _listen(self.config.listen)
        link_app = web.Application(client_max_size=MAX_FRAME_BYTES)
        link_app.router.add_get(linkproto.PATH, self.handle)
        runner = web.AppRunner(link_app, handle_signals=False, access_log=None)
        await runner.setup()
        if self.sock is None:
            try:
                self.sock = socket.create_server((host, port), backlog=BACKLOG)
            except OSError:
                await runner.cleanup()
                raise
        site = web.SockSite(runner, self.sock, backlog=BACKLOG, ssl_context=server_tls(self.config))
        await site.start()
        self.port = int(self.sock.getsockname()[1])
        print(f"cluster link open on {host}:{self.port}", flush=True)

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.config.accounts_poll_seconds)
                try:
                    await self.refresh()
                except Exception as exc:  # the loop must survive anything
                    log.error("link refresh failed: %s", type(exc).__name__)

        await self.refresh()
        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for client in list(self.clients):
            if self.handing_over and client.role == "collector":
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.ws.send_bytes(linkproto.pack("restarting", RESTART_SECONDS))
            await client.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        await runner.cleanup()


def _listen(value: str) -> tuple[str, int]:
    from collector.settings import parse_listen

    parsed = parse_listen(value)
    if parsed is None:
        raise ValueError("listen")
    return parsed


LINK_SERVER = web.AppKey("link_server", LinkServer)
