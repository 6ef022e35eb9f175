"""``streamtally aggregate``: one counting shard of a cluster.

The shard is the single-node service without the collector: no report endpoint, but the
cluster link (``aggregator/cluster/link_server.py``) on ``--listen``, and the customer and admin API
on ``--port``. That API acts on the whole cluster from any shard: an account purge runs on
the account's owner (reached over the link, role ``peer``), and an admin flush flushes every
shard. Stats, exports and accounts read ClickHouse, which every shard shares.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from aggregator import drain
from aggregator.api import admin
from aggregator.api.admintoken import AdminToken
from aggregator.api.auth import require_admin
from aggregator.app import API_MODULES, finish_app, open_service
from aggregator.cluster.link_server import LINK_SERVER, LinkServer
from aggregator.config import AggregatorConfig
from aggregator.purge import PURGER
from aggregator.purge.cluster import ClusterPurger as ClickHouseClusterPurger
from aggregator.purge.purger import Purger
from aggregator.service import SERVICE, Service
from collector import linkproto
from collector.config import CollectorConfig
from collector.errors import NotFound, StorageError
from collector.linkconfig import ClusterConfig, client_tls, link_url
from collector.ownership import Shard, owner, parse_shard

CALL_SECONDS = 600.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Peers:
    """Calls on other shards over their link listeners (role ``peer``)."""

    def __init__(self, config: ClusterConfig, shard: Shard) -> None:
        assert config.cluster_secret is not None
        self.secret = config.cluster_secret
        self.addresses = config.aggregators
        self.shard = shard
        self.config = config
        self.tls = client_tls(config)

    def reachable(self) -> bool:
        """Whether the other shards' addresses are known (``--aggregators``)."""
        return len(self.addresses) == self.shard.count

    async def call(self, index: int, name: str, args: dict[str, Any]) -> tuple[int, Any]:
        url = link_url(self.addresses[index], self.config)
        timeout = aiohttp.ClientTimeout(total=CALL_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.ws_connect(
                    url,
                    max_msg_size=64 * 1024 * 1024,
                    ssl=self.tls if self.tls is not None else True,
                ) as ws,
            ):
                first = linkproto.unpack(await ws.receive_bytes(timeout=10))
                if first[0] != "challenge" or first[1] != linkproto.VERSION:
                    raise StorageError(
                        f"shard {index} speaks another link version than "
                        f"{linkproto.VERSION} (every process of a cluster runs one release)"
                    )
                server_nonce = bytes.fromhex(first[2])
                if int(first[3]) != index:
                    raise StorageError(f"the address of shard {index} answers as {first[3]}")
                client_nonce = linkproto.nonce()
                mac = linkproto.proof(self.secret, "client", server_nonce, client_nonce)
                await ws.send_bytes(linkproto.pack("hello", "peer", client_nonce.hex(), mac))
                welcome = linkproto.unpack(await ws.receive_bytes(timeout=10))
                if not linkproto.proof_ok(
                    self.secret, "server", server_nonce, client_nonce, welcome[1]
                ):
                    raise StorageError(f"shard {index} did not prove the cluster secret")
                await ws.send_bytes(linkproto.pack("call", 1, name, args))
                reply = linkproto.unpack(await ws.receive_bytes(timeout=CALL_SECONDS))
                return int(reply[2]), reply[3]
        except (aiohttp.ClientError, OSError, ValueError, TypeError, TimeoutError) as exc:
            raise StorageError(f"shard {index} cannot be reached: {type(exc).__name__}") from None


class OwnerPurger(Purger):
    """A purge runs on the account's owner (the only shard that counts it, so no row of it
    is written after the receipt); other shards forget the account within a refresh."""

    def __init__(self, service: Service, link: LinkServer, peers: Peers) -> None:
        super().__init__(service)
        self.link = link
        self.peers = peers

    def _owner(self, account_id: str) -> int:
        return owner(account_id, self.link.shard.count)

    async def purge(self, account_id: str, actor: str) -> dict[str, Any]:
        index = self._owner(account_id)
        if index == self.link.shard.index:
            return await super().purge(account_id, actor)
        if not self.peers.reachable():
            raise StorageError(
                f"the account belongs to shard {index}: purge it there, or give this "
                "aggregator --aggregators to reach it"
            )
        status, body = await self.peers.call(
            index, "purge", {"account_id": account_id, "actor": actor}
        )
        if status == 404:
            raise NotFound("no such account", key="account_id")
        if status != 200 or not isinstance(body, dict):
            raise StorageError(f"the purge on shard {index} failed: {body}")
        await self.link.refresh()  # 410 here too, at once
        return body

    async def stop_account(self, account_id: str) -> None:
        self.link.forget(account_id)  # refused over the link from now on
        await super().stop_account(account_id)

    async def pending(self) -> list[tuple[str, str, datetime]]:
        """Only the purges of this shard's accounts are resumed here."""
        return [p for p in await super().pending() if self._owner(p[0]) == self.link.shard.index]


class OwnerClusterPurger(OwnerPurger, ClickHouseClusterPurger):
    """The same, on a ClickHouse cluster (``--clickhouse-cluster``)."""


async def cluster_flush(request: web.Request) -> web.Response:
    """POST /v1/admin/flush on a shard: this shard's open cells and every other shard's."""
    require_admin(request)
    link = request.app[LINK_SERVER]
    peers = request.app[PEERS]
    report = await request.app[SERVICE].flush(everything=True)
    body = report.as_json()
    if peers.reachable():
        for index in range(link.shard.count):
            if index != link.shard.index:
                status, other = await peers.call(index, "flush", {})
                if status != 200:
                    raise StorageError(f"the flush on shard {index} failed: {other}")
                for name in body:
                    body[name] += int(other[name])
    return web.json_response(body)


PEERS = web.AppKey("peers", Peers)


@web.middleware
async def refresh_after_change(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A change made through this shard's API (an account, a token, a deletion) reaches its
    collectors at once, not at the next poll; other shards see it at theirs."""
    response = await handler(request)
    if request.method not in ("GET", "HEAD", "OPTIONS") and response.status < 400:
        await request.app[LINK_SERVER].refresh()
    return response


async def create_shard_app(
    collector_config: CollectorConfig,
    aggregator_config: AggregatorConfig,
    cluster_config: ClusterConfig,
    admin_token: AdminToken | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    app, service, accounts = await open_service(
        collector_config, aggregator_config, admin_token, clock
    )
    link = LinkServer(
        service=service,
        accounts=accounts,
        config=cluster_config,
        collector_config=collector_config,
        clock=clock,
    )
    peers = Peers(cluster_config, parse_shard(cluster_config.shard))
    app[LINK_SERVER] = link
    app[PEERS] = peers
    app.middlewares.append(refresh_after_change)
    drain.install(app)  # a hot restart tells keep-alive clients to leave (SIGHUP)
    for module in API_MODULES:
        for route in module.routes:
            if (
                module is admin
                and isinstance(route, web.RouteDef)
                and route.path.endswith("/flush")
            ):
                continue
            app.router.add_routes([route])
    app.router.add_post("/v1/admin/flush", cluster_flush)
    finish_app(app, collector_config)
    purger = (
        OwnerClusterPurger(service, link, peers)
        if service.store.cluster is not None
        else OwnerPurger(service, link, peers)
    )
    app[PURGER] = purger

    async def call_flush(args: dict[str, Any]) -> tuple[int, Any]:
        report = await service.flush(everything=True)
        return 200, report.as_json()

    async def call_purge(args: dict[str, Any]) -> tuple[int, Any]:
        return 200, await purger.purge(str(args["account_id"]), str(args["actor"]))

    link.calls["flush"] = call_flush
    link.calls["purge"] = call_purge
    app.cleanup_ctx.append(link.lifetime)  # after the service's: stopped before its final flush
    return app
