"""``streamtally``: run the service, migrate, manage accounts and keys.

Every failure to start is one line on stderr, ``streamtally: <setting>: <cause>``, and exit
status 2; other failures (a server's refusal, an unreachable server) exit with status 1.

streamtally serve [--port 8080 --data-dir ./streamtally-data ...]
streamtally aggregate --shard I/M --listen HOST:PORT --cluster-secret S ...  (clustercmd.py)
streamtally collect --aggregators HOST:PORT,... --cluster-secret S ...
streamtally migrate
streamtally accounts create --name NAME --origin https://example.com [--k 10]
                            [--stream NAME] [--stream-pattern 'match-*']
streamtally keys rotate | list
streamtally bench [--quick] [--url http://127.0.0.1:8080 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator import benchcmd, gcpolicy
from aggregator.api import account_api, export
from aggregator.client import DEFAULT_SERVER, admin_token, print_result, request
from aggregator.cluster import commands as clustercmd
from aggregator.config import AggregatorConfig
from aggregator.signals import note_early_hangup, until_signal
from collector import preflight, settings
from collector.config import CollectorConfig
from collector.errors import ConfigError, StorageError, StreamTallyError
from collector.linkconfig import ClusterConfig

if TYPE_CHECKING:
    from aggregator.hot_restart import Inherited

log = logging.getLogger("streamtally")

LISTEN_BACKLOG = 1024  # connections that wait while a hot restart runs

DESCRIPTION = "StreamTally: run the service, migrate its schema, manage accounts, tokens and keys."
# The settings each command reads (serve reads them all); its --help lists only these.
MIGRATE_SETTINGS = ("data_dir", "clickhouse_url", "database", "clickhouse_cluster")
KEYS_SETTINGS = ("data_dir", "key_overlap_seconds")


def _configs(args: argparse.Namespace) -> tuple[CollectorConfig, AggregatorConfig]:
    config_path = args.config or os.environ.get(settings.env_name("config"))
    file_values = settings.read_file(Path(config_path) if config_path else None)
    return (
        settings.load(CollectorConfig, args, os.environ, file_values),
        settings.load(AggregatorConfig, args, os.environ, file_values),
    )


def _cluster_config(args: argparse.Namespace) -> ClusterConfig:
    config_path = args.config or os.environ.get(settings.env_name("config"))
    file_values = settings.read_file(Path(config_path) if config_path else None)
    return settings.load(ClusterConfig, args, os.environ, file_values)


def _add_service_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    parser.add_argument("--config", help="a TOML file of settings (env STREAMTALLY_CONFIG)")
    settings.add_arguments(parser, CollectorConfig, AggregatorConfig, only=only)


def _check_machine(collector_config: CollectorConfig) -> None:
    """Before anything starts: the data dir and both listen addresses (one-line errors).
    After a hot restart the public port is this process's own inherited socket: not
    checked (a test bind would find it taken)."""
    from aggregator import hot_restart

    preflight.data_dir(collector_config.data_dir.resolve())
    if hot_restart.ENV not in os.environ:
        preflight.listen_address(
            collector_config.host, collector_config.port, host_setting="host", port_setting="port"
        )
    metrics = settings.parse_listen(collector_config.metrics_listen)
    preflight.distinct_listeners(collector_config.host, collector_config.port, metrics)
    if metrics is not None:
        preflight.listen_address(
            *metrics, host_setting="metrics_listen", port_setting="metrics_listen"
        )


def _storage_setting(aggregator_config: AggregatorConfig, exc: StorageError) -> ConfigError:
    """A store that cannot be opened at start-up, as the setting that chose it."""
    if aggregator_config.clickhouse_url:
        return ConfigError("clickhouse_url", f"ClickHouse cannot be used: {exc}")
    return ConfigError("data_dir", f"the embedded ClickHouse cannot start there: {exc}")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- serve ---------------------------------------------------------------------------------


async def _serve(
    collector_config: CollectorConfig, aggregator_config: AggregatorConfig
) -> Inherited | None:
    """Serve until SIGTERM/SIGINT (None: stop) or SIGHUP (what to hand the re-executed
    code: aggregator/hot_restart.py)."""
    from aiohttp import web

    from aggregator import drain, hot_restart
    from aggregator.api.admintoken import AdminToken
    from aggregator.app import RUNNER_OPTIONS, create_app
    from aggregator.opmetrics import OPERATOR_LISTENER
    from aggregator.service import SERVICE
    from collector.lean import LeanAppRunner

    inherit = hot_restart.inherited()
    data_dir = collector_config.data_dir.resolve()
    token, generated = AdminToken.setup(data_dir, aggregator_config.admin_token)
    if generated:
        print(f"Generated admin token (shown once, stored only as a hash): {generated}", flush=True)
    try:
        app = await create_app(collector_config, aggregator_config, token)
    except StorageError as exc:
        raise _storage_setting(aggregator_config, exc) from None
    if inherit is not None:
        hot_restart.take_over(app, inherit)
        sock = socket.socket(fileno=inherit.listen_fd)
        sock.set_inheritable(False)
    else:
        try:
            sock = socket.create_server(
                (collector_config.host, collector_config.port), backlog=LISTEN_BACKLOG
            )
        except OSError as exc:  # taken since the check at start
            raise preflight.bind_error(
                exc, collector_config.host, collector_config.port, "host", "port"
            ) from None
    # Everything loaded so far (modules, ClickHouse client, parsers) lives as long as the
    # process, and so does most of what comes: out of the cyclic GC's scans, which
    # otherwise stall requests (aggregator/gcpolicy.py).
    retiring = gcpolicy.start()
    # Report posts take the lean path (collector/lean.py); while draining, aiohttp's.
    runner = LeanAppRunner(app, draining=lambda: app[drain.DRAINING].on, **RUNNER_OPTIONS)
    metrics = settings.parse_listen(collector_config.metrics_listen)
    try:
        await runner.setup()  # starts the operator metrics listener too (a cleanup_ctx)
    except OSError as exc:
        if metrics is None:
            raise
        raise preflight.bind_error(exc, *metrics, "metrics_listen", "metrics_listen") from None
    operator_url = app[OPERATOR_LISTENER].url
    print(
        f"operator metrics on {operator_url}/metrics" if operator_url else "no metrics listener",
        flush=True,
    )
    site = web.SockSite(runner, sock, backlog=LISTEN_BACKLOG)
    await site.start()
    port = sock.getsockname()[1]
    print(f"streamtally listening on http://{collector_config.host}:{port}", flush=True)
    hangup = await until_signal()
    retiring.cancel()
    if not hangup:
        log.info("shutting down: draining requests, flushing every open cell")
        await runner.cleanup()
        log.info("stopped")
        return None
    log.info("hot restart: draining requests, then handing the state over in memory")
    listen_fd = os.dup(sock.fileno())  # keeps the socket (and its backlog) past the site
    await site.stop()  # no more accepts: new connections wait in the backlog
    drain.start(app)  # each answer from here on: Connection: close (aggregator/drain.py)
    # accepted connections' requests come in; busy keep-alive clients are told to leave
    await drain.until_quiet(runner)
    service = app[SERVICE]
    service.handing_over = True
    await runner.cleanup()  # requests in flight finish; no final flush, no session ends
    started = time.perf_counter()
    state_fd = hot_restart.write_state(app)
    log.info("hot restart: state written to memory in %.3f s", time.perf_counter() - started)
    return hot_restart.Inherited(listen_fd, state_fd, service.generation + 1)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvloop

    collector_config, aggregator_config = _configs(args)
    cluster_config = _cluster_config(args)
    note_early_hangup()  # a SIGHUP before the server listens is acted on once it does
    if cluster_config.workers > 1:
        from aggregator.cluster.workers import serve_workers

        preflight.data_dir(collector_config.data_dir.resolve())
        _setup_logging(aggregator_config.log_level)
        handed = uvloop.run(serve_workers(collector_config, aggregator_config, cluster_config))
        if handed is not None:
            from aggregator.hot_restart import reexec

            reexec(handed)
        return 0
    _check_machine(collector_config)
    _setup_logging(aggregator_config.log_level)
    handover = uvloop.run(_serve(collector_config, aggregator_config))
    if handover is not None:
        from aggregator.hot_restart import reexec

        reexec(handover)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from aggregator.storage.migrate import migrate
    from aggregator.storage.store import Store

    collector_config, aggregator_config = _configs(args)
    preflight.data_dir(collector_config.data_dir.resolve())

    async def run() -> list[str]:
        store = await Store.connect(
            url=aggregator_config.clickhouse_url,
            data_dir=collector_config.data_dir.resolve(),
            database=aggregator_config.database,
            cluster=aggregator_config.clickhouse_cluster,
        )
        try:
            return await migrate(store)
        finally:
            await store.close()

    try:
        applied = asyncio.run(run())
    except StorageError as exc:
        raise _storage_setting(aggregator_config, exc) from None
    print("applied: " + (", ".join(applied) if applied else "nothing (schema is current)"))
    return 0


# -- client commands against a running server ----------------------------------------------


def cmd_accounts_create(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "origins": args.origin or []}
    if args.stream:
        body["streams"] = args.stream
    if args.stream_pattern:
        body["stream_patterns"] = args.stream_pattern
    if args.k is not None:
        body["k"] = args.k
    if args.privacy is not None:
        privacy: dict[str, Any] = {"mode": args.privacy}
        if args.epsilon_per_day is not None:
            privacy["epsilon_per_day"] = args.epsilon_per_day
        if args.delta is not None:
            privacy["delta"] = args.delta
        body["privacy"] = privacy
    status, result = request(
        "POST", args.server.rstrip("/") + "/v1/admin/accounts", admin_token(args), body
    )
    return print_result(status, result)


def cmd_keys(args: argparse.Namespace) -> int:
    from collector.keys import KeyStore

    collector_config, _ = _configs(args)
    preflight.data_dir(collector_config.data_dir.resolve())
    keys = KeyStore.open(
        collector_config.data_dir.resolve() / "keys", collector_config.key_overlap_seconds
    )
    if args.keys_command == "rotate":
        new = keys.rotate()
        print(
            f"new current key_id {new.key_id}; previous keys keep opening reports for "
            f"{collector_config.key_overlap_seconds} s (a running server picks this up "
            "within 30 s)"
        )
    for key in keys.usable():
        state = (
            "current"
            if key.retired_at is None
            else (f"retired {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(key.retired_at))}")
        )
        print(f"key_id {key.key_id}  {state}  public {key.public_bytes().hex()}")
    return 0


# -- entry ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamtally", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run collector and aggregator in one process")
    _add_service_flags(serve)
    settings.add_arguments(serve, ClusterConfig, only=("workers",))
    serve.set_defaults(func=cmd_serve)

    clustercmd.add_cli(sub)

    mig = sub.add_parser("migrate", help="apply the ClickHouse schema migrations")
    _add_service_flags(mig, MIGRATE_SETTINGS)
    mig.set_defaults(func=cmd_migrate)

    accounts = sub.add_parser("accounts", help="manage accounts on a running server")
    acc_sub = accounts.add_subparsers(dest="accounts_command", required=True)
    create = acc_sub.add_parser("create", help="create an account")
    create.add_argument("--name", required=True)
    create.add_argument("--origin", action="append", help="allowed page origin (repeat)")
    create.add_argument(
        "--stream",
        action="append",
        help="declared stream name (CMCD cid), kept as sent even if it looks like an "
        "identifier (repeat)",
    )
    create.add_argument(
        "--stream-pattern",
        action="append",
        help="declared stream names as a glob, e.g. 'match-*' (* and ? stand for letters, "
        "digits, _ and -) (repeat)",
    )
    create.add_argument("--k", type=int, help="k-anonymity threshold (>= 2)")
    create.add_argument(
        "--privacy",
        choices=("k", "dp"),
        help="k: k-anonymity (default); dp: differential privacy on top of the k floor, "
        "from the next UTC day (docs/privacy.md)",
    )
    create.add_argument("--epsilon-per-day", type=float, help="dp: epsilon per viewer-day")
    create.add_argument("--delta", type=float, help="dp: delta per released part")
    for p in (create,):
        p.add_argument("--server", default=os.environ.get("STREAMTALLY_SERVER", DEFAULT_SERVER))
        p.add_argument("--admin-token", help="admin token (env STREAMTALLY_ADMIN_TOKEN)")
    create.set_defaults(func=cmd_accounts_create)
    account_api.add_accounts_cli(acc_sub)
    account_api.add_cli(sub)
    export.add_cli(sub)
    benchcmd.add_cli(sub)

    keys = sub.add_parser("keys", help="HPKE keys in the data dir")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    for name, text in (("rotate", "add a new current key"), ("list", "list usable keys")):
        p = keys_sub.add_parser(name, help=text)
        _add_service_flags(p, KEYS_SETTINGS)
        p.set_defaults(func=cmd_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:  # "<setting>: <cause>", one line
        print(f"streamtally: {exc}", file=sys.stderr)
        return 2
    except StreamTallyError as exc:
        print(f"streamtally: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
