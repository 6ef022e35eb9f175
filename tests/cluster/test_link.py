"""The cluster link, in one process on 127.0.0.1: two real shard apps on the real ClickHouse
test server and a real collector app, linked through a TCP relay that records every byte
(what an observer of the network between the hosts sees)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from aggregator.app import RUNNER_OPTIONS
from aggregator.cluster.link_server import LINK_SERVER, LinkServer
from aggregator.cluster.shard import create_shard_app
from collector import linkproto
from collector.collect import LINK_SINK, create_collect_app
from collector.handover import Dimensions, Event
from collector.linkconfig import ClusterConfig
from collector.ownership import owner
from tests.cluster.tlsfiles import TlsFiles, make_tls_files
from tests.conftest import ChDatabase
from tests.integration.conftest import ADMIN_TOKEN, CHROME_UA, ORIGIN, make_configs

SECRET = secrets.token_hex(32)
IP = "198.51.100.77"


@dataclass
class Relay:
    """A TCP relay that keeps every byte it passes on, both ways."""

    target_port: int
    up: bytearray = field(default_factory=bytearray)  # client -> shard
    down: bytearray = field(default_factory=bytearray)  # shard -> client
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def copy(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, seen: bytearray
        ) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    seen += data
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(copy(reader, up_writer, self.up), copy(up_reader, writer, self.down))

    def payloads(self) -> bytes:
        """What an observer reads: the HTTP upgrade, then every WebSocket frame's payload
        unmasked (a client's frames are XOR-masked with a key sent alongside)."""
        return _unframe(bytes(self.up)) + _unframe(bytes(self.down))

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _unframe(stream: bytes) -> bytes:
    head, _, rest = stream.partition(b"\r\n\r\n")
    out = bytearray(head)
    i = 0
    while i + 2 <= len(rest):
        masked, length = rest[i + 1] & 0x80, rest[i + 1] & 0x7F
        i += 2
        if length == 126:
            length, i = int.from_bytes(rest[i : i + 2], "big"), i + 2
        elif length == 127:
            length, i = int.from_bytes(rest[i : i + 8], "big"), i + 8
        mask = rest[i : i + 4] if masked else b"\0\0\0\0"
        i += 4 if masked else 0
        out += bytes(b ^ mask[n % 4] for n, b in enumerate(rest[i : i + length]))
        i += length
    return bytes(out)


@dataclass
class Linked:
    shards: list[TestServer]
    links: list[LinkServer]
    relays: list[Relay]
    collector: TestServer
    http: aiohttp.ClientSession

    def url(self, server: TestServer) -> str:
        return str(server.make_url("")).rstrip("/")

    async def create_account(self, name: str) -> dict[str, str]:
        resp = await self.http.post(
            self.url(self.shards[0]) + "/v1/admin/accounts",
            json={"name": name, "origins": [ORIGIN], "k": 2},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert resp.status == 201, await resp.text()
        account: dict[str, str] = await resp.json()
        return account

    async def account_of_shard(self, shard: int) -> dict[str, str]:
        for n in range(50):
            account = await self.create_account(f"shard{shard}-{n}")
            if owner(account["account_id"], len(self.shards)) == shard:
                await self.known(account["embed_key"])
                return account
        raise AssertionError("no account of that shard in 50 tries")

    async def known(self, embed_key: str) -> None:
        for _ in range(200):
            resp = await self.http.options(
                self.url(self.collector) + f"/v1/r/{embed_key}", headers={"Origin": ORIGIN}
            )
            if resp.status == 204:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the collector never learnt the account")

    async def report(self, embed_key: str, body: str) -> aiohttp.ClientResponse:
        resp = await self.http.post(
            self.url(self.collector) + f"/v1/r/{embed_key}?player=hls.js",
            data=body.encode(),
            headers={
                "Content-Type": "application/cmcd",
                "User-Agent": CHROME_UA,
                "X-Forwarded-For": IP,
                "Origin": ORIGIN,
            },
        )
        await resp.read()
        return resp


@contextlib.asynccontextmanager
async def running_cluster(
    tmp_path: Path, ch_database: ChDatabase, tls: TlsFiles | None = None
) -> AsyncIterator[Linked]:
    shards: list[TestServer] = []
    links: list[LinkServer] = []
    relays: list[Relay] = []
    for i in range(2):
        collector_config, aggregator_config = make_configs(tmp_path / f"shard{i}", ch_database)
        cluster = ClusterConfig(
            shard=f"{i}/2",
            listen="127.0.0.1:0",
            cluster_secret=SECRET,
            accounts_poll_seconds=0.2,
            cluster_tls_cert=tls.server_cert if tls else None,
            cluster_tls_key=tls.server_key if tls else None,
            cluster_tls_ca=tls.ca if tls else None,
        )
        app = await create_shard_app(collector_config, aggregator_config, cluster)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server(**RUNNER_OPTIONS)
        shards.append(server)
        links.append(app[LINK_SERVER])
        relay = Relay(app[LINK_SERVER].port)
        relays.append(relay)
    ports = [await relay.start() for relay in relays]
    collector_config, _ = make_configs(tmp_path / "collector", ch_database)
    cluster = ClusterConfig(
        aggregators=tuple(f"127.0.0.1:{p}" for p in ports),
        cluster_secret=SECRET,
        cluster_tls_cert=tls.client_cert if tls else None,
        cluster_tls_key=tls.client_key if tls else None,
        cluster_tls_ca=tls.ca if tls else None,
    )
    collector = TestServer(create_collect_app(collector_config, cluster), host="127.0.0.1")
    await collector.start_server(**RUNNER_OPTIONS)
    try:
        async with aiohttp.ClientSession() as http:
            yield Linked(shards, links, relays, collector, http)
    finally:
        await collector.close()
        for relay in relays:
            relay.close()
        for server in shards:
            with contextlib.suppress(Exception):
                await server.close()


@pytest.fixture
async def linked(tmp_path: Path, ch_database: ChDatabase) -> AsyncIterator[Linked]:
    async with running_cluster(tmp_path, ch_database) as running:
        yield running


async def _drained(linked: Linked) -> None:
    sink = linked.collector.app[LINK_SINK]
    for _ in range(200):
        if all(link.held == 0 for link in sink.links):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("events never acknowledged")


async def test_an_observer_of_the_link_sees_no_secret_and_no_identifier(linked: Linked) -> None:
    account = await linked.account_of_shard(1)
    sid = "sid-canary-6f1e2d"
    for sn in range(3):
        line = f'e=ps,sid="{sid}",sn={sn},sta=p,ts={1_700_000_000_000 + sn},v=2\n'
        resp = await linked.report(account["embed_key"], line)
        assert resp.status == 204
    await _drained(linked)
    seen = linked.relays[0].payloads() + linked.relays[1].payloads()
    assert b'"ev"' in seen  # the events did cross the observed link
    process, days = linked.links[1].viewers.handover_secrets()
    assert days, "the shard holds today's viewer secret"
    for secret in (SECRET.encode(), bytes(process), *(bytes(s) for s in days.values())):
        assert secret not in seen
        assert secret.hex().encode() not in seen
    # (the account directory, embed keys and origins included, is not viewer data)
    for identifier in (IP.encode(), CHROME_UA.encode(), sid.encode()):
        assert identifier not in seen


async def test_a_client_without_the_secret_gets_nothing(linked: Linked) -> None:
    url = f"http://127.0.0.1:{linked.links[0].port}{linkproto.PATH}"
    wrong = secrets.token_hex(32)
    old_server_nonce = linkproto.nonce()
    attempts = {
        # a guess of the secret
        "wrong-secret": lambda sn, cn: linkproto.proof(wrong, "client", sn, cn),
        # a proof that was valid on another connection (replayed)
        "replayed": lambda sn, cn: linkproto.proof(SECRET, "client", old_server_nonce, cn),
        # the shard's own answer label, reflected
        "reflected": lambda sn, cn: linkproto.proof(SECRET, "server", sn, cn),
    }
    for name, make in attempts.items():
        async with linked.http.ws_connect(url) as ws:
            challenge = linkproto.unpack(await ws.receive_bytes(timeout=5))
            sn, cn = bytes.fromhex(challenge[2]), linkproto.nonce()
            await ws.send_bytes(linkproto.pack("hello", "collector", cn.hex(), make(sn, cn)))
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE, (name, msg)
            assert ws.close_code == linkproto.AUTH_FAILED, name


async def test_a_shard_away_refuses_its_accounts_with_503_and_not_the_others(
    linked: Linked,
) -> None:
    mine = await linked.account_of_shard(0)
    theirs = await linked.account_of_shard(1)
    await linked.shards[1].close()  # shard 1 goes away
    sink = linked.collector.app[LINK_SINK]
    for _ in range(100):
        if not sink.links[1].up:
            break
        await asyncio.sleep(0.05)
    line = 'e=ps,sid="s1",sn=0,sta=p,ts=1700000000000,v=2\n'
    refused = await linked.report(theirs["embed_key"], line)
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) >= 1
    accepted = await linked.report(mine["embed_key"], line)
    assert accepted.status == 204


def _counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("streamtally_link_events_total", {"outcome": outcome})
    return value or 0.0


async def test_a_batch_sent_twice_is_counted_once(linked: Linked) -> None:
    account = await linked.account_of_shard(0)
    url = f"http://127.0.0.1:{linked.links[0].port}{linkproto.PATH}"
    event = Event(
        account["account_id"], 123, 456, time.time(), "live", "ps", Dimensions(),
        ts_ms=1_700_000_000_000, seq=0, state="p",
    )  # fmt: skip
    frame = linkproto.event_frame(1, [linkproto.event_row(event)])
    before = _counted("counted"), _counted("duplicate")
    async with linked.http.ws_connect(url) as ws:
        challenge = linkproto.unpack(await ws.receive_bytes(timeout=5))
        sn, cn = bytes.fromhex(challenge[2]), linkproto.nonce()
        proof = linkproto.proof(SECRET, "client", sn, cn)
        await ws.send_bytes(linkproto.pack("hello", "collector", cn.hex(), proof))
        assert linkproto.unpack(await ws.receive_bytes(timeout=5))[0] == "welcome"
        for _ in range(2):  # as after a link that broke before the acknowledgement came
            await ws.send_bytes(frame)
            while (reply := linkproto.unpack(await ws.receive_bytes(timeout=5)))[0] != "ack":
                assert reply[0] in ("accounts", "secrets")
    assert (_counted("counted") - before[0], _counted("duplicate") - before[1]) == (1, 1)


async def test_over_tls_an_observer_reads_nothing_and_a_client_without_a_certificate_is_refused(
    tmp_path: Path, ch_database: ChDatabase
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    async with running_cluster(tmp_path, ch_database, tls) as linked:
        account = await linked.account_of_shard(1)
        before = _counted("counted")
        line = 'e=ps,sid="tls",sn=0,sta=p,ts=1700000000000,v=2\n'
        assert (await linked.report(account["embed_key"], line)).status == 204
        await _drained(linked)
        assert _counted("counted") - before == 1
        raw = bytes(linked.relays[1].up + linked.relays[1].down)
        for readable in (b'"ev"', b'"accounts"', b'"challenge"', b"Upgrade: websocket"):
            assert readable not in raw
        # The CA is trusted but no client certificate is shown: the shard does not talk.
        context = ssl.create_default_context(cafile=tls.ca)
        url = f"https://127.0.0.1:{linked.links[0].port}{linkproto.PATH}"
        with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
            async with linked.http.ws_connect(url, ssl=context) as ws:
                await ws.receive_bytes(timeout=5)
