"""The collector's end of the cluster link: a Sink that ships events to their owner shard.

One :class:`ShardLink` per aggregator shard keeps a WebSocket open (reconnecting with a
short back-off), proves the cluster secret (``collector/linkproto.py``), and then:

- sends the events of the shard's accounts in batches, at most ``link_window`` batches
  unacknowledged; a batch stays in memory until the shard acknowledges it and is sent
  again on the next connection if the link broke first (the owner's dedupe counts each
  event once);
- holds at most ``link_buffer_events`` events (queued plus unacknowledged); past that, or
  while the link is down or the shard's viewer secrets have not arrived, reports for the
  shard's accounts are refused with 503 and ``Retry-After`` (players send them again),
  except while a shard that announced a hot restart (``restarting``) is away: its events
  are held then, for as long as it said (at most ``MAX_RESTART_SECONDS``). Nothing of it
  is ever written to disk; a hot restart of the collector hands it to the new code in
  memory (:meth:`ShardLink.held_rows`, :meth:`ShardLink.restore`);
- receives the account directory (``accounts``) and the shard's viewer secrets
  (``secrets``, sealed under the link's session key), both kept in memory only.

The viewer key of an account is computed under its owner's daily secret and its session
handle under its owner's session secret, so every collector computes the same keys and
handles: a player whose reports reach different collectors is one viewer and one session.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
from prometheus_client import Counter, Gauge

from collector import linkproto
from collector.accounts import Account
from collector.handover import Event
from collector.linkconfig import ClusterConfig, client_tls, link_url
from collector.ownership import owner
from collector.viewer import ViewerKeys

log = logging.getLogger("streamtally.link")

LINK_UP = Gauge("streamtally_link_up", "1 while the link to the shard is up", ["shard"])
LINK_BUFFERED = Gauge(
    "streamtally_link_buffered_events", "Events held for the shard, not yet acknowledged", ["shard"]
)
LINK_SENT = Counter("streamtally_link_events_sent_total", "Events sent over the link (resent too)")
LINK_RESENT = Counter(
    "streamtally_link_batches_resent_total",
    "Batches sent again after a reconnect (unacknowledged when the link broke)",
)
LINK_DOWN_SECONDS = Gauge(
    "streamtally_link_last_down_seconds",
    "How long the link to the shard was down before its last reconnect",
    ["shard"],
)
RETRY_AFTER_SECONDS = 2
BACKOFF_SECONDS = (0.1, 0.2, 0.5, 1.0, 2.0)
HEARTBEAT_SECONDS = 5.0
ACK_LATE_SECONDS = 1.0
DELIVERY_SECONDS = 3.0
MAX_RESTART_SECONDS = 30.0  # the most a shard's "restarting" is believed
MAX_FRAME_BYTES = 64 * 1024 * 1024


class ReceivedViewerKeys(ViewerKeys):
    """A shard's viewer secrets as the shard sent them: a missing day is never drawn here."""

    __slots__ = ("received",)

    def __init__(self, grace_seconds: int, clock: Callable[[], float]) -> None:
        super().__init__(grace_seconds, clock)
        self.received = False

    def _open_day(self, day: int) -> None:
        return None

    def adopt(self, process: bytearray, days: dict[int, bytearray]) -> None:
        try:
            self.take_over(process, days)
        finally:
            for buffer in (process, *days.values()):
                buffer[:] = bytes(len(buffer))
        self.received = True

    def has_day(self, at: float) -> bool:
        return self.received and self.day_of(at) in self.days()


class ClusterViewerKeys(ViewerKeys):
    """Viewer keys and session handles under the owner shard's secrets; the rate limiter's
    client and address handles under this process's own (they never leave it)."""

    __slots__ = ("_owners", "shards")

    def __init__(
        self, shards: Sequence[ReceivedViewerKeys], grace_seconds: int, clock: Callable[[], float]
    ) -> None:
        super().__init__(grace_seconds, clock)
        self.shards = tuple(shards)
        self._owners: dict[str, ReceivedViewerKeys] = {}

    def _owner(self, account_id: str) -> ReceivedViewerKeys:
        found = self._owners.get(account_id)
        if found is None:
            if len(self._owners) > 1_000_000:
                self._owners.clear()
            found = self._owners[account_id] = self.shards[owner(account_id, len(self.shards))]
        return found

    def key(self, account_id: str, ip: str, ua: str, at: float) -> int | None:
        return self._owner(account_id).key(account_id, ip, ua, at)

    def session_handle(self, account_id: str, sid: str) -> int:
        return self._owner(account_id).session_handle(account_id, sid)

    def rotate(self) -> None:
        super().rotate()
        for shard in getattr(self, "shards", ()):
            shard.rotate()


class LinkDirectory:
    """The account directory as the shards send it (implements AccountDirectory).

    Every shard sends the whole directory when it changes; the newest version wins, and
    a deletion, once seen from any shard, stays (a deleted account never comes back)."""

    def __init__(self) -> None:
        self.version = -1
        self._by_embed_key: dict[str, Account] = {}
        self._tombstones: dict[str, Account] = {}
        self._deleted: set[str] = set()

    def by_embed_key(self, embed_key: str) -> Account | None:
        found = self._by_embed_key.get(embed_key)
        if found is None and self._tombstones and not embed_key.startswith("sha256:"):
            digest = hashlib.sha256(embed_key.encode("utf-8")).hexdigest()
            found = self._tombstones.get("sha256:" + digest)
        return found

    def update(self, version: int, rows: list[Any]) -> None:
        accounts = [linkproto.account_from_row(row) for row in rows]
        self._deleted.update(a.account_id for a in accounts if a.deleted)
        if version < self.version:
            self._apply_deletions()
            return
        self.version = version
        by_key: dict[str, Account] = {}
        tombstones: dict[str, Account] = {}
        for account in accounts:
            if account.account_id in self._deleted and not account.deleted:
                account = dataclasses.replace(account, deleted=True)
            (tombstones if account.embed_key.startswith("sha256:") else by_key)[
                account.embed_key
            ] = account
        self._by_embed_key = by_key
        self._tombstones = tombstones

    def handover_state(self) -> tuple[int, list[Any], list[str]]:
        """The directory as plain data, for a hot restart (the new code answers reports at
        once, before a shard has sent the directory again)."""
        accounts = [*self._by_embed_key.values(), *self._tombstones.values()]
        return self.version, [linkproto.account_row(a) for a in accounts], sorted(self._deleted)

    def take_over(self, version: int, rows: list[Any], deleted: list[str]) -> None:
        self._deleted.update(str(account_id) for account_id in deleted)
        self.update(int(version), rows)

    def _apply_deletions(self) -> None:
        for key, account in list(self._by_embed_key.items()):
            if account.account_id in self._deleted and not account.deleted:
                self._by_embed_key[key] = dataclasses.replace(account, deleted=True)


class ShardLink:
    """The link to one shard: a queue, the batches in flight, and the connection."""

    def __init__(
        self,
        index: int,
        address: str,
        config: ClusterConfig,
        directory: LinkDirectory,
        viewers: ReceivedViewerKeys,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.cluster_secret is not None
        self.index = index
        self.shards = len(config.aggregators)
        self.url = link_url(address, config)
        self.tls = client_tls(config)
        self.secret = config.cluster_secret
        self.limit = config.link_buffer_events
        self.batch = config.link_batch_events
        self.window = config.link_window
        self.directory = directory
        self.viewers = viewers
        self.clock = clock
        self.pending: deque[linkproto.Row] = deque()
        self.inflight: dict[int, list[linkproto.Row]] = {}
        self.sent_at: dict[int, float] = {}  # when each batch in flight was (last) sent
        self.held = 0  # events queued or in flight
        # Delivery receipts: every event pushed gets the next serial; a batch acknowledged
        # settles every report whose last event's serial it covers (acks come in order).
        self.pushed = 0  # serial of the last event pushed
        self.taken = 0  # serial of the last event put in a batch
        self.ends: dict[int, int] = {}  # batch seq -> serial of its last event
        self.waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self.up = False
        self.down_since: float | None = None  # monotonic time the link last went down
        self.back_by = 0.0  # a shard in a hot restart said it is back by then (monotonic)
        self.seq = 0
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._label = str(index)

    def accepting(self) -> bool:
        """Up, room in the buffer, the owner's secrets here, and no acknowledgement late
        (a shard that stopped answering is refused within ``ACK_LATE_SECONDS``, long before
        the heartbeat gives up on it: fewer events wait and arrive out of order later).
        While the shard is in a hot restart it announced, its events are held, not refused:
        each report waits for its acknowledgement as always (503 after
        ``DELIVERY_SECONDS``), so a restart shorter than that is only a delay to players."""
        if not (self.held < self.limit and self.viewers.has_day(self.clock())):
            return False
        if not self.up:
            return time.monotonic() < self.back_by
        for sent in self.sent_at.values():  # the oldest first
            return time.monotonic() - sent < ACK_LATE_SECONDS
        return True

    def push(self, rows: list[linkproto.Row]) -> asyncio.Future[None]:
        """Queue a report's events; the future is done once the shard has counted them."""
        self.pending.extend(rows)
        self.held += len(rows)
        self.pushed += len(rows)
        LINK_BUFFERED.labels(self._label).set(self.held)
        self._wake.set()
        receipt: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append((self.pushed, receipt))
        return receipt

    def held_rows(self) -> list[linkproto.Row]:
        """Every event held (unacknowledged batches in order, then the queue), for a hot
        restart: the new code sends them again (the owner's dedupe drops what it has)."""
        rows = [row for seq in sorted(self.inflight) for row in self.inflight[seq]]
        rows.extend(self.pending)
        return rows

    def restore(self, rows: list[linkproto.Row]) -> None:
        """Queue the events the code before a hot restart held (no report waits on them:
        each was answered already, 204 only if the shard had acknowledged it)."""
        self.pending.extend(rows)
        self.held += len(rows)
        self.pushed += len(rows)
        LINK_BUFFERED.labels(self._label).set(self.held)
        self._wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        failures = 0
        while True:
            try:
                async with session.ws_connect(
                    self.url,
                    heartbeat=HEARTBEAT_SECONDS,
                    max_msg_size=MAX_FRAME_BYTES,
                    ssl=self.tls if self.tls is not None else True,
                ) as ws:
                    key = await self._handshake(ws)
                    failures = 0
                    await self._serve(ws, key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever broke the link, connect again
                if failures == 0:  # our own messages name no client; others only by type
                    why = str(exc) if type(exc) is ValueError else type(exc).__name__
                    log.warning("link to shard %d down: %s", self.index, why)
            finally:
                if self.up:
                    self.down_since = time.monotonic()
                self.up = False
                LINK_UP.labels(self._label).set(0)
            await asyncio.sleep(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)])
            failures += 1

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> bytes:
        first = linkproto.unpack(await ws.receive_bytes(timeout=10))
        if first[0] != "challenge" or first[1] != linkproto.VERSION:
            raise ValueError(
                f"the shard did not send a challenge of link version {linkproto.VERSION} "
                "(every process of a cluster runs the same release)"
            )
        server_nonce = bytes.fromhex(first[2])
        shard_index, shard_count = int(first[3]), int(first[4])
        client_nonce = linkproto.nonce()
        mac = linkproto.proof(self.secret, "client", server_nonce, client_nonce)
        await ws.send_bytes(linkproto.pack("hello", "collector", client_nonce.hex(), mac))
        welcome = linkproto.unpack(await ws.receive_bytes(timeout=10))
        if welcome[0] != "welcome" or not linkproto.proof_ok(
            self.secret, "server", server_nonce, client_nonce, welcome[1]
        ):
            raise ValueError("the shard did not prove the cluster secret")
        if shard_index != self.index or shard_count != self.shards:
            raise ValueError(
                f"the address of shard {self.index}/{self.shards} answers as shard "
                f"{shard_index}/{shard_count}: --aggregators must list every shard in order"
            )
        return linkproto.session_key(self.secret, server_nonce, client_nonce)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, key: bytes) -> None:
        self.up = True
        LINK_UP.labels(self._label).set(1)
        # What the last connection left unacknowledged goes first (dedupe drops repeats).
        self.sent_at = {}
        for seq in sorted(self.inflight):
            self.sent_at[seq] = time.monotonic()
            await ws.send_bytes(linkproto.event_frame(seq, self.inflight[seq]))
        self.back_by = 0.0
        if self.down_since is not None:
            down = time.monotonic() - self.down_since
            LINK_RESENT.inc(len(self.inflight))
            LINK_DOWN_SECONDS.labels(self._label).set(down)
            log.info(
                "link to shard %d up again after %.3f s; %d unacknowledged batch(es) sent again",
                self.index,
                down,
                len(self.inflight),
            )
            self.down_since = None
        sender = asyncio.create_task(self._send(ws))
        try:
            await self._receive(ws, key)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self.inflight) >= self.window:
                self._acked.clear()
                await self._acked.wait()
                continue
            n = min(self.batch, len(self.pending))
            rows = [self.pending.popleft() for _ in range(n)]
            self.seq += 1
            self.taken += n
            self.ends[self.seq] = self.taken
            self.inflight[self.seq] = rows
            self.sent_at[self.seq] = time.monotonic()
            LINK_SENT.inc(n)
            await ws.send_bytes(linkproto.event_frame(self.seq, rows))

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, key: bytes) -> None:
        async for msg in ws:
            if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                break
            frame = linkproto.unpack(msg.data)
            kind = frame[0]
            if kind == "ack":
                seq = int(frame[1])
                rows = self.inflight.pop(seq, None)
                self.sent_at.pop(seq, None)
                end = self.ends.pop(seq, 0)
                waiters = self.waiters
                while waiters and waiters[0][0] <= end:
                    receipt = waiters.popleft()[1]
                    if not receipt.done():
                        receipt.set_result(None)
                if rows is not None:
                    self.held -= len(rows)
                    LINK_BUFFERED.labels(self._label).set(self.held)
                self._acked.set()
            elif kind == "restarting":
                seconds = min(float(frame[1]), MAX_RESTART_SECONDS)
                self.back_by = time.monotonic() + seconds
            elif kind == "accounts":
                self.directory.update(int(frame[1]), frame[2])
            elif kind == "secrets":
                plaintext = linkproto.unseal(key, frame[1])
                process, days = linkproto.secrets_from_plaintext(plaintext)
                self.viewers.adopt(process, days)


class LinkSink:
    """Implements collector.handover.Sink: events go to the shard that owns their account."""

    def __init__(self, links: Sequence[ShardLink]) -> None:
        self.links = tuple(links)
        self._owners: dict[str, ShardLink] = {}
        self._receipt: asyncio.Future[None] | None = None

    def _link(self, account_id: str) -> ShardLink:
        link = self._owners.get(account_id)
        if link is None:
            if len(self._owners) > 1_000_000:
                self._owners.clear()
            link = self._owners[account_id] = self.links[owner(account_id, len(self.links))]
        return link

    def submit(self, events: Sequence[Event]) -> None:
        if not events:
            return
        row = linkproto.event_row
        link = self._link(events[0].account_id)  # one report: one account
        self._receipt = link.push([row(ev) for ev in events])

    async def delivered(self) -> bool:
        """Whether the events of the report just run (if any) reached their owner within
        ``DELIVERY_SECONDS``: the report is answered 204 only then, so a collector that
        dies loses nothing it confirmed. False: 503, the player sends it again, and what
        did arrive meanwhile is dropped by the owner's dedupe."""
        receipt, self._receipt = self._receipt, None
        if receipt is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(receipt), DELIVERY_SECONDS)
        except TimeoutError:
            return False
        return True

    def forget_account(self, account_id: str) -> None:
        self._owners.pop(account_id, None)

    def accepting(self) -> bool:
        return True  # decided per account: accepting_for

    def accepting_for(self, account_id: str) -> bool:
        return self._link(account_id).accepting()

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(link.run(session) for link in self.links))
