"""``streamtally aggregate`` and ``streamtally collect``: the two halves of a cluster.

streamtally aggregate --shard I/M --listen HOST:PORT --port P --clickhouse-url URL
                      --data-dir D --cluster-secret S --admin-token T [--aggregators ...]
streamtally collect --aggregators HOST:PORT,HOST:PORT,... --port P --data-dir D
                    --cluster-secret S [--trusted-proxies ...]

Settings come from the command line, then ``STREAMTALLY_*``, then the ``--config`` file, as
for ``serve``; a missing or invalid one stops the start with one line naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aggregator import gcpolicy
from aggregator.signals import note_early_hangup, until_signal
from collector import preflight, settings
from collector.config import CollectorConfig
from collector.errors import ConfigError, StorageError
from collector.linkconfig import ClusterConfig, client_tls, server_tls, tls_problem

log = logging.getLogger("streamtally")

LISTEN_BACKLOG = 1024
LINKS_BACK_SECONDS = 2.0  # a restarted collector waits this long at most for its links
TLS = ("cluster_tls_cert", "cluster_tls_key", "cluster_tls_ca")
AGGREGATE_CLUSTER = (
    "shard",
    "listen",
    "aggregators",
    "cluster_secret",
    "accounts_poll_seconds",
    *TLS,
)
COLLECT_CLUSTER = (
    "aggregators",
    "cluster_secret",
    "link_buffer_events",
    "link_batch_events",
    "link_window",
    "api_upstream",
    *TLS,
)


def _file_values(args: argparse.Namespace) -> dict[str, Any]:
    config_path = args.config or os.environ.get(settings.env_name("config"))
    return settings.read_file(Path(config_path) if config_path else None)


def _cluster(args: argparse.Namespace, file_values: dict[str, Any]) -> ClusterConfig:
    config = settings.load(ClusterConfig, args, os.environ, file_values)
    if not config.cluster_secret:
        raise ConfigError(
            "cluster_secret", "needed: --cluster-secret or STREAMTALLY_CLUSTER_SECRET"
        )
    problem = tls_problem(config)
    if problem is not None:
        raise ConfigError(*problem)
    try:
        server_tls(config)
        client_tls(config)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("cluster_tls_cert", f"the TLS files cannot be used: {exc}") from None
    return config


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    try:
        return socket.create_server((host, port), backlog=LISTEN_BACKLOG, reuse_port=reuse_port)
    except OSError as exc:
        raise preflight.bind_error(exc, host, port, "host", "port") from None


def _inherited_socket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock


async def _serve(
    app: Any,
    sock: socket.socket,
    host: str,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> tuple[bool, Any, Any]:
    """Serve ``app`` on ``sock`` until SIGTERM or SIGINT (False) or SIGHUP (True: a hot
    restart); the runner and the site, still running. ``ready``: awaited once the app has
    started and before the first accept (connections wait in the backlog meanwhile)."""
    from aiohttp import web

    from aggregator.app import RUNNER_OPTIONS
    from collector.lean import LeanAppRunner

    # A collector's report posts take the lean path (collector/lean.py); an app without the
    # collector's routes (aggregate) gets aiohttp's runner as it was.
    runner = LeanAppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    if ready is not None:
        await ready()
    # Everything loaded so far (modules, ClickHouse client, parsers) lives as long as the
    # process, and so does most of what comes: out of the cyclic GC's scans, which
    # otherwise stall requests (aggregator/gcpolicy.py).
    retiring = gcpolicy.start()
    site = web.SockSite(runner, sock, backlog=LISTEN_BACKLOG)
    await site.start()
    print(f"streamtally listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    hangup = await until_signal()
    retiring.cancel()
    return hangup, runner, site


async def _drain_for_handover(app: Any, runner: Any, site: Any) -> None:
    """No more accepts (new connections wait in the backlog); keep-alive clients told to
    leave (``aggregator/drain.py``); the requests in flight answered."""
    from aggregator import drain

    await site.stop()
    drain.start(app)
    await drain.until_quiet(runner)


async def _links_back(app: Any) -> None:
    """After a collector's hot restart: until every link is up with its shard's secrets,
    for at most ``LINKS_BACK_SECONDS``, so that the reports waiting in the backlog are
    taken rather than answered 503 while the links reconnect."""
    from collector.collect import LINK_SINK

    links = app[LINK_SINK].links
    deadline = time.monotonic() + LINKS_BACK_SECONDS
    while time.monotonic() < deadline and not all(link.accepting() for link in links):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


# -- aggregate -----------------------------------------------------------------------------


def cmd_aggregate(args: argparse.Namespace) -> int:
    import uvloop

    from aggregator import hot_restart
    from aggregator.config import AggregatorConfig

    file_values = _file_values(args)
    collector_config = settings.load(CollectorConfig, args, os.environ, file_values)
    aggregator_config = settings.load(AggregatorConfig, args, os.environ, file_values)
    cluster_config = _cluster(args, file_values)
    if not cluster_config.listen:
        raise ConfigError("listen", "needed: --listen HOST:PORT for the collectors' links")
    if not aggregator_config.admin_token:
        raise ConfigError("admin_token", "needed: --admin-token or STREAMTALLY_ADMIN_TOKEN")
    preflight.data_dir(collector_config.data_dir.resolve())
    listen = settings.parse_listen(cluster_config.listen)
    assert listen is not None
    if hot_restart.ENV not in os.environ:  # after a hot restart both are this process's own
        preflight.listen_address(*listen, host_setting="listen", port_setting="listen")
        preflight.listen_address(
            collector_config.host, collector_config.port, host_setting="host", port_setting="port"
        )
    _setup_logging(aggregator_config.log_level)
    note_early_hangup()  # a SIGHUP before the server listens is acted on once it does

    async def main() -> hot_restart.Inherited | None:
        from aggregator.api.admintoken import AdminToken
        from aggregator.cluster import restart
        from aggregator.cluster.link_server import LINK_SERVER
        from aggregator.cluster.shard import create_shard_app
        from aggregator.service import SERVICE

        inherit = hot_restart.inherited()
        data_dir = collector_config.data_dir.resolve()
        token, _ = AdminToken.setup(data_dir, aggregator_config.admin_token)
        try:
            app = await create_shard_app(collector_config, aggregator_config, cluster_config, token)
        except StorageError as exc:
            raise ConfigError("clickhouse_url", f"ClickHouse cannot be used: {exc}") from None
        link = app[LINK_SERVER]
        if inherit is not None:
            restart.take_over_shard(app, inherit)
            sock = _inherited_socket(inherit.listen_fd)
            if inherit.link_fd is not None:
                link.sock = _inherited_socket(inherit.link_fd)
        else:
            sock = _bind(collector_config.host, collector_config.port)
        hangup, runner, site = await _serve(app, sock, collector_config.host)
        if not hangup:
            log.info("shutting down")
            await runner.cleanup()
            return None
        log.info("hot restart: draining requests, then handing the state over in memory")
        assert link.sock is not None
        started = time.perf_counter()
        listen_fd, link_fd = os.dup(sock.fileno()), os.dup(link.sock.fileno())
        await _drain_for_handover(app, runner, site)
        service = app[SERVICE]
        service.handing_over = link.handing_over = True
        await runner.cleanup()  # the links close first: no event after this
        stopped = time.perf_counter()
        state_fd = restart.shard_state(app)
        log.info(
            "hot restart: drained and stopped in %.3f s, state written to memory in %.3f s",
            stopped - started,
            time.perf_counter() - stopped,
        )
        return hot_restart.Inherited(listen_fd, state_fd, service.generation + 1, link_fd)

    handover = uvloop.run(main())
    if handover is not None:
        hot_restart.reexec(handover)
    return 0


# -- collect -------------------------------------------------------------------------------


def cmd_collect(args: argparse.Namespace) -> int:
    import uvloop

    from aggregator import hot_restart

    file_values = _file_values(args)
    collector_config = settings.load(CollectorConfig, args, os.environ, file_values)
    cluster_config = _cluster(args, file_values)
    if not cluster_config.aggregators:
        raise ConfigError("aggregators", "needed: --aggregators HOST:PORT,... (every shard)")
    preflight.data_dir(collector_config.data_dir.resolve())
    reuse_port = bool(getattr(args, "reuse_port", False))
    if not reuse_port and hot_restart.ENV not in os.environ:
        preflight.listen_address(
            collector_config.host, collector_config.port, host_setting="host", port_setting="port"
        )
    metrics = settings.parse_listen(collector_config.metrics_listen)
    from aggregator.config import AggregatorConfig

    log_level = settings.load(AggregatorConfig, args, os.environ, file_values).log_level
    _setup_logging(log_level)
    note_early_hangup()  # a SIGHUP before the server listens is acted on once it does

    async def main() -> hot_restart.Inherited | None:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from aggregator import drain
        from aggregator.cluster import restart
        from aggregator.opmetrics import operator_registry
        from collector.collect import RESTARTS, create_collect_app

        registry = operator_registry()  # the operator's view, as serve and aggregate show

        async def metrics_handler(request: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", metrics_handler)

        inherit = hot_restart.inherited()
        app = create_collect_app(collector_config, cluster_config)
        drain.install(app)
        if inherit is not None:
            restart.take_over_collect(app, inherit)
            sock = _inherited_socket(inherit.listen_fd)
        else:
            sock = _bind(collector_config.host, collector_config.port, reuse_port=reuse_port)
        metrics_runner: web.AppRunner | None = None
        if metrics is not None:
            metrics_runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
            await metrics_runner.setup()
            try:
                await web.TCPSite(metrics_runner, *metrics, reuse_port=reuse_port).start()
            except OSError as exc:
                raise preflight.bind_error(
                    exc, *metrics, "metrics_listen", "metrics_listen"
                ) from None
        try:
            ready = None if inherit is None else functools.partial(_links_back, app)
            hangup, runner, site = await _serve(app, sock, collector_config.host, ready)
            if not hangup:
                log.info("shutting down")
                await runner.cleanup()
                return None
            log.info("hot restart: draining requests and links, then handing over the rest")
            started = time.perf_counter()
            listen_fd = os.dup(sock.fileno())
            await _drain_for_handover(app, runner, site)
            drained = time.perf_counter()
            restarts = app[RESTARTS]
            restarts.handing_over = True
            await runner.cleanup()  # reports answered; the links deliver for a bounded time
            state_fd = restart.collect_state(app)
            log.info(
                "hot restart: connections drained in %.3f s, reports answered and links "
                "delivered in %.3f s",
                drained - started,
                time.perf_counter() - drained,
            )
            return hot_restart.Inherited(listen_fd, state_fd, restarts.generation + 1)
        finally:
            if metrics_runner is not None:
                await metrics_runner.cleanup()

    handover = uvloop.run(main())
    if handover is not None:
        hot_restart.reexec(handover)
    return 0


def add_cli(sub: Any) -> None:
    """The two commands on the ``streamtally`` parser."""
    from aggregator.config import AggregatorConfig

    aggregate = sub.add_parser(
        "aggregate", help="run counting shard I of M of a cluster (link listener + API)"
    )
    aggregate.add_argument("--config", help="a TOML file of settings (env STREAMTALLY_CONFIG)")
    settings.add_arguments(aggregate, CollectorConfig, AggregatorConfig)
    settings.add_arguments(aggregate, ClusterConfig, only=AGGREGATE_CLUSTER)
    aggregate.set_defaults(func=cmd_aggregate)

    collect = sub.add_parser(
        "collect", help="run a cluster's player-facing collector (reports, keys)"
    )
    collect.add_argument("--config", help="a TOML file of settings (env STREAMTALLY_CONFIG)")
    settings.add_arguments(collect, CollectorConfig)
    settings.add_arguments(collect, ClusterConfig, only=COLLECT_CLUSTER)
    settings.add_arguments(collect, AggregatorConfig, only=("log_level",))
    collect.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other collect processes (SO_REUSEPORT), as serve --workers does",
    )
    collect.set_defaults(func=cmd_collect)
