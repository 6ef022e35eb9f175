"""The single-node service: collector and aggregator in one aiohttp application.

``create_app`` is the app factory. Resources that routes need at construction (the store,
the accounts) are opened here; everything with a lifetime is closed through
``cleanup_ctx``: on shutdown the aggregator ends every session, flushes every open cell and
only then closes the store, so SIGTERM loses no accepted event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from aggregator import drain, purge
from aggregator.api import (
    account_api,
    admin,
    dashboard,
    export,
    openapi,
    privacy_api,
    register,
    stats,
)
from aggregator.api.admintoken import AdminToken
from aggregator.api.auth import ACCOUNT_STORE, ADMIN_TOKEN
from aggregator.config import AggregatorConfig
from aggregator.opmetrics import OPERATOR_LISTENER, OperatorListener
from aggregator.service import SERVICE, Service
from aggregator.storage.accounts_store import AccountStore
from aggregator.storage.migrate import migrate
from aggregator.storage.store import Store
from collector import preflight
from collector.app import PrivateAccessLogger, problem_middleware, setup_collector
from collector.config import CollectorConfig
from collector.settings import parse_listen

log = logging.getLogger("streamtally")

STORE = web.AppKey("store", Store)

# How every runner of the app is set up, in production and in tests alike.
RUNNER_OPTIONS: dict[str, Any] = {
    "access_log_class": PrivateAccessLogger,
    "handle_signals": False,
    "shutdown_timeout": 10.0,
}


API_MODULES = (admin, stats, export, openapi, account_api, register, dashboard, privacy_api)


async def create_app(
    collector_config: CollectorConfig,
    aggregator_config: AggregatorConfig,
    admin_token: AdminToken | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The whole service. ``clock``: the wall clock for arrival times, windows and viewer-key
    days; only tests pass another one (a test clock, so that hours and days pass in seconds)."""
    app, service, accounts = await open_service(
        collector_config, aggregator_config, admin_token, clock
    )
    setup_collector(app, collector_config, accounts, service, clock)
    drain.install(app)
    for module in API_MODULES:
        app.router.add_routes(module.routes)
    finish_app(app, collector_config)
    return app


async def open_service(
    collector_config: CollectorConfig,
    aggregator_config: AggregatorConfig,
    admin_token: AdminToken | None,
    clock: Callable[[], float],
) -> tuple[web.Application, Service, AccountStore]:
    """The store (migrated), the accounts and the counting service, in an application that
    has no routes yet (``serve`` adds the collector's, ``aggregate`` the link's)."""
    metrics_address = parse_listen(collector_config.metrics_listen)
    preflight.distinct_listeners(collector_config.host, collector_config.port, metrics_address)
    data_dir = collector_config.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if admin_token is None:
        admin_token, _ = AdminToken.setup(data_dir, aggregator_config.admin_token)
    store = await Store.connect(
        url=aggregator_config.clickhouse_url,
        data_dir=data_dir,
        database=aggregator_config.database,
        cluster=aggregator_config.clickhouse_cluster,
    )
    applied = await migrate(store)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    accounts = AccountStore(store)
    await accounts.load()
    service = Service(
        store=store,
        accounts=accounts,
        data_dir=data_dir,
        collector_config=collector_config,
        config=aggregator_config,
        clock=clock,
    )
    await service.start_spool()

    app = web.Application(
        middlewares=[problem_middleware],
        client_max_size=max(collector_config.max_body_bytes, 1024 * 1024),
    )
    app[STORE] = store
    app[ADMIN_TOKEN] = admin_token
    app[ACCOUNT_STORE] = accounts
    app[SERVICE] = service
    app[admin.DEFAULT_K] = aggregator_config.default_k
    app[admin.DEFAULT_RETENTION] = aggregator_config.retention_days
    return app, service, accounts


def finish_app(app: web.Application, collector_config: CollectorConfig) -> None:
    """Health, the operator listener, the lifetimes (store closed last) and purges."""
    service = app[SERVICE]
    app.router.add_get("/healthz", healthz)
    # GET /metrics is not a route of this (public) app: see aggregator/opmetrics.py.
    app[OPERATOR_LISTENER] = OperatorListener(
        parse_listen(collector_config.metrics_listen), service.update_gauges, RUNNER_OPTIONS
    )
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(service.lifetime)
    app.cleanup_ctx.append(app[OPERATOR_LISTENER].lifetime)
    purge.install(app)  # finishes any purge a crash interrupted, before the first request


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Registered first, so closed last: after the service's final flush."""
    yield
    await app[STORE].close()


async def healthz(request: web.Request) -> web.Response:
    """Public: two states, nothing that counts (the spool's size is an operator metric);
    ``generation``: hot restarts of this process (0 at a cold start)."""
    service = request.app[SERVICE]
    clickhouse = await request.app[STORE].ping()
    body = {
        "status": "ok" if service.accepting() else "degraded",
        "clickhouse": "up" if clickhouse else "down",
        "generation": service.generation,
    }
    return web.json_response(body, status=200 if service.accepting() else 503)
