"""``streamtally collect``: the player-facing endpoint of a cluster.

The collector application of ``streamtally serve`` (reports, CORS preflights, ``/v1/keys``)
with its Sink replaced by the link client (``collector/link.py``): it does the CPU-heavy,
stateless part — receive, open, parse, admit, limit, strip, viewer key — and forwards
identifier-free events to the aggregator shard that owns the account. It keeps no state that
counts: the account directory and the viewer secrets come from the shards, the HPKE keys
from its data dir (the same key files on every collector: ``keys/`` of a shared or copied
folder; ``streamtally keys rotate`` there, and every collector picks the new key up within
30 s). Nothing it receives is written to disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from collector.apiproxy import setup_proxy
from collector.app import problem_middleware, setup_collector
from collector.config import CollectorConfig
from collector.dedupe import Deduper
from collector.link import ClusterViewerKeys, LinkDirectory, LinkSink, ReceivedViewerKeys, ShardLink
from collector.linkconfig import ClusterConfig

DRAIN_SECONDS = 10.0
HANDOVER_DRAIN_SECONDS = 2.0  # a hot restart hands over what is still held after this


class Restarts:
    """This process's hot restarts: how many so far, and whether one is under way (then
    what the links hold is handed to the new code, not delivered at any cost)."""

    __slots__ = ("generation", "handing_over")

    def __init__(self) -> None:
        self.generation = 0
        self.handing_over = False


LINK_SINK = web.AppKey("link_sink", LinkSink)
RESTARTS = web.AppKey("restarts", Restarts)


class EveryEvent(Deduper):
    """A deduper that lets everything through: in a cluster the owner shard counts each
    event once, whichever collector a player's retry reached."""

    __slots__ = ()

    def first_time(self, session: int, sn: int | None, ts: int, kind: str) -> bool:
        return True


def create_collect_app(
    collector_config: CollectorConfig,
    cluster_config: ClusterConfig,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    grace = collector_config.viewer_key_grace_seconds
    directory = LinkDirectory()
    received = [ReceivedViewerKeys(grace, clock) for _ in cluster_config.aggregators]
    links = [
        ShardLink(index, address, cluster_config, directory, received[index], clock)
        for index, address in enumerate(cluster_config.aggregators)
    ]
    sink = LinkSink(links)
    app = web.Application(
        middlewares=[problem_middleware],
        client_max_size=max(collector_config.max_body_bytes, 1024 * 1024),
    )
    app[LINK_SINK] = sink
    app[RESTARTS] = Restarts()
    setup_collector(
        app,
        collector_config,
        directory,
        sink,
        clock,
        viewers=ClusterViewerKeys(received, grace, clock),
        deduper=EveryEvent(),
    )
    if cluster_config.api_upstream:
        setup_proxy(app, cluster_config.api_upstream)  # health and the API: the aggregator's
    else:
        app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(links_ctx)
    return app


async def links_ctx(app: web.Application) -> AsyncIterator[None]:
    """The links; at shutdown (after the last report was answered) what they hold is
    delivered first, for up to ``DRAIN_SECONDS`` (``HANDOVER_DRAIN_SECONDS`` before a hot
    restart, which hands the rest to the new code)."""
    sink = app[LINK_SINK]
    task = asyncio.create_task(sink.run())
    yield
    most = HANDOVER_DRAIN_SECONDS if app[RESTARTS].handing_over else DRAIN_SECONDS
    deadline = time.monotonic() + most
    while any(link.held and link.up for link in sink.links) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # a bounded wait at shutdown
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def healthz(request: web.Request) -> web.Response:
    """Public: ok when every shard's link is up; which shards are away (never a count);
    ``generation``: hot restarts of this process (0 at a cold start)."""
    links = request.app[LINK_SINK].links
    down = [link.index for link in links if not link.up]
    body = {
        "status": "degraded" if down else "ok",
        "shards_down": down,
        "generation": request.app[RESTARTS].generation,
    }
    return web.json_response(body, status=503 if down else 200)
