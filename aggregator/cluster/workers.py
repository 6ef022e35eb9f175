"""``streamtally serve --workers N``: one host, N collector processes and one aggregator.

The aggregator (this process) is shard 0 of 1: it counts every account, writes ClickHouse
and serves the API on a loopback port of its own. N ``streamtally collect`` children share
the public port (``SO_REUSEPORT``: the kernel spreads connections over them), do the
CPU-heavy part of every report, and forward events over the cluster link on loopback,
authenticated with a secret drawn at random for this run (handed to the children in their
environment, never written anywhere). Every request that is not a report, a preflight or
``/v1/keys`` is passed on by the collector that took it to the aggregator's API
(``collector/apiproxy.py``). One counting process, so the numbers are those of ``serve``.

A child that dies is started again. SIGTERM stops the children first (each delivers what
it holds), then the aggregator flushes everything, as ``serve`` does.

SIGHUP rolls the children: one at a time, each is hot restarted in place (``collect``'s
SIGHUP: same pid, same socket in the ``SO_REUSEPORT`` group, its buffers and rate limits
handed over; the others keep taking reports meanwhile), the next once it listens again.
The parent (the one counting process) is not re-executed: it is the children's parent and
holds their pipes, and re-adopting live children across an ``exec`` is not built. To run
new code in it, stop and start it (a cold restart, as for ``serve``), or run the cluster as
``aggregate`` + ``collect``, whose every process restarts hot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from aggregator.config import AggregatorConfig
from collector import preflight, settings
from collector.config import CollectorConfig
from collector.keys import KeyStore
from collector.linkconfig import ClusterConfig

log = logging.getLogger("streamtally.workers")

READY_SECONDS = 60.0
NOT_PASSED = frozenset({"metrics_listen", "host", "port"})


def _flag_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def collector_args(config: CollectorConfig) -> list[str]:
    """Every collector setting of this run as flags, so each child runs with the same."""
    args: list[str] = []
    for f in dataclasses.fields(config):
        value = _flag_value(getattr(config, f.name))
        if f.name in NOT_PASSED or value is None:
            continue
        if f.name == "data_dir":
            value = str(Path(value).resolve())
        args += [settings.flag(f.name), value]
    return args


class Worker:
    def __init__(self, index: int, cmd: list[str], env: dict[str, str]) -> None:
        self.index = index
        self.cmd = cmd
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.stopping = False

    async def start(self) -> None:
        self.ready.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, env=self.env, stdout=asyncio.subprocess.PIPE
        )
        self.reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if "listening on" in line:
                self.ready.set()  # the parent says where it listens, once, for all
            else:
                print(f"[worker {self.index}] {line}", flush=True)

    async def hot_restart(self) -> bool:
        """SIGHUP to the child; True once it listens again (its new code), within
        ``READY_SECONDS``."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return False
        self.ready.clear()
        proc.send_signal(signal.SIGHUP)
        try:
            await asyncio.wait_for(self.ready.wait(), READY_SECONDS)
        except TimeoutError:
            log.error("collector worker %d did not come back from its hot restart", self.index)
            return False
        log.info("collector worker %d: hot restart done (pid %d)", self.index, proc.pid)
        return True

    async def watch(self) -> None:
        """Start the child again whenever it dies, until the service stops."""
        while not self.stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self.stopping:
                return
            log.error("collector worker %d exited (status %s): starting it again", self.index, code)
            await asyncio.sleep(0.5)
            await self.start()

    async def stop(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def serve_workers(
    collector_config: CollectorConfig,
    aggregator_config: AggregatorConfig,
    cluster_config: ClusterConfig,
) -> None:
    from aggregator.api.admintoken import AdminToken
    from aggregator.app import RUNNER_OPTIONS
    from aggregator.cluster.link_server import LINK_SERVER
    from aggregator.cluster.shard import create_shard_app

    host, port = collector_config.host, collector_config.port
    # Holds the public port for the children (and picks it if port is 0); never listens.
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError as exc:
        raise preflight.bind_error(exc, host, port, "host", "port") from None
    port = holder.getsockname()[1]

    secret = secrets.token_hex(32)
    link_config = dataclasses.replace(
        cluster_config, shard="0/1", listen="127.0.0.1:0", aggregators=(), cluster_secret=secret
    )
    api_config = dataclasses.replace(collector_config, host="127.0.0.1", port=0)
    data_dir = collector_config.data_dir.resolve()
    token, generated = AdminToken.setup(data_dir, aggregator_config.admin_token)
    if generated:
        print(f"Generated admin token (shown once, stored only as a hash): {generated}", flush=True)
    # The children share one key set: made here first, so that they do not each draw one.
    KeyStore.open(
        data_dir / "keys",
        collector_config.key_overlap_seconds,
        rotation_seconds=collector_config.key_rotation_seconds,
    )
    app = await create_shard_app(api_config, aggregator_config, link_config, token)
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api_port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    link_port = app[LINK_SERVER].port

    cmd = [
        sys.executable, "-m", "aggregator.cli", "collect", "--reuse-port",
        "--host", host, "--port", str(port), "--metrics-listen", "off",
        "--aggregators", f"127.0.0.1:{link_port}",
        "--api-upstream", f"http://127.0.0.1:{api_port}",
        "--log-level", aggregator_config.log_level,
        *collector_args(collector_config),
    ]  # fmt: skip
    env = {**os.environ, settings.env_name("cluster_secret"): secret}
    env.pop(settings.env_name("config"), None)  # every setting is passed as a flag
    workers = [Worker(i, cmd, env) for i in range(cluster_config.workers)]
    for worker in workers:
        await worker.start()
    try:
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in workers)), READY_SECONDS)
    except TimeoutError:
        for worker in workers:
            await worker.stop()
        await runner.cleanup()
        raise preflight_error() from None
    watchers = [asyncio.create_task(w.watch()) for w in workers]
    print(
        f"streamtally listening on http://{host}:{port} ({len(workers)} collector workers)",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rolling: list[asyncio.Task[None]] = []

    async def roll() -> None:
        for worker in workers:
            if not worker.stopping:
                await worker.hot_restart()
        log.info(
            "hot restart: every collector worker rolled; the aggregator (this process) is "
            "not re-executed: stop and start it to run new code in it"
        )

    def on_hangup() -> None:
        if rolling and not rolling[-1].done():
            log.warning("hot restart: a roll of the collector workers is already under way")
            return
        log.info("hot restart: rolling the collector workers one at a time")
        rolling.append(asyncio.create_task(roll()))

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    await stop.wait()
    for task in rolling:
        task.cancel()
    log.info("shutting down: collector workers first, then a flush of every open cell")
    for worker in workers:
        await worker.stop()
    for task in watchers:
        task.cancel()
    holder.close()
    await runner.cleanup()
    log.info("stopped")


def preflight_error() -> Exception:
    from collector.errors import ConfigError

    return ConfigError("workers", f"the collector workers did not start in {READY_SECONDS:.0f} s")
