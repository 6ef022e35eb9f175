"""Purge: deleting an account everywhere (privacy invariant 4), with its receipt.

:mod:`aggregator.purge.purger` purges on one ClickHouse server; :mod:`aggregator.purge.cluster`
on a cluster (setting ``clickhouse_cluster``). This module wires the right one into the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from aggregator.purge.cluster import ClusterPurger
from aggregator.purge.purger import RETRY_SECONDS, Purger
from aggregator.service import SERVICE, Service
from collector.errors import StorageError

__all__ = ["PURGER", "get_purger", "install", "purge_ctx", "purger_for", "resume_purges"]

log = logging.getLogger("streamtally.purge")

PURGER = web.AppKey("purger", Purger)
_fallback: weakref.WeakKeyDictionary[Service, Purger] = weakref.WeakKeyDictionary()


def install(app: web.Application) -> None:
    """Give the app its Purger and resume unfinished purges at start (``purge_ctx``).

    Call from ``create_app`` after ``app[SERVICE]`` is set and after
    ``app.cleanup_ctx.append(service.lifetime)``.
    """
    app[PURGER] = purger_for(app[SERVICE])
    app.cleanup_ctx.append(purge_ctx)


def purger_for(service: Service) -> Purger:
    found = _fallback.get(service)
    if found is None:
        if service.store.cluster is not None:
            found = _fallback[service] = ClusterPurger(service)
        else:
            found = _fallback[service] = Purger(service)
    return found


def get_purger(app: web.Application) -> Purger:
    return app.get(PURGER) or purger_for(app[SERVICE])


async def resume_purges(app: web.Application) -> list[dict[str, Any]]:
    """Finish the purges an earlier run left unfinished (their receipts)."""
    return await get_purger(app).resume()


async def purge_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: before the first request, every unfinished purge is resumed and finished;
    if ClickHouse fails meanwhile, the accounts already answer 410 and it is retried every
    minute in the background."""
    purger = get_purger(app)
    task: asyncio.Task[None] | None = None
    try:
        await purger.resume()
    except StorageError as exc:
        log.error("an interrupted purge could not be finished yet: %s", exc)

        async def retry() -> None:
            while True:
                await asyncio.sleep(RETRY_SECONDS)
                try:
                    await purger.resume()
                    return
                except StorageError as again:
                    log.error("an interrupted purge could not be finished yet: %s", again)

        task = asyncio.create_task(retry())
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
