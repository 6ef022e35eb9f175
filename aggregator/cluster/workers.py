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

SIGHUP hot restarts every process in turn: the children one at a time (``collect``'s
SIGHUP: same pid, same socket in the ``SO_REUSEPORT`` group, its buffers and rate limits
handed over; the others keep taking reports meanwhile), each once the one before listens
again, then this process, as ``aggregate`` restarts (its API and link sockets and its
state cross the exec in memory), keeping its children: their pids and the read ends of
their stdout pipes cross the exec too, and the new code watches them through pidfds.
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
from typing import TYPE_CHECKING, Any

from aiohttp import web

from aggregator.config import AggregatorConfig
from collector import preflight, settings
from collector.config import CollectorConfig
from collector.keys import KeyStore
from collector.linkconfig import ClusterConfig

if TYPE_CHECKING:
    from aggregator.hot_restart import Inherited

log = logging.getLogger("streamtally.workers")

READY_SECONDS = 60.0
LISTEN_BACKLOG = 1024
CLUSTER_SECRET_DAY = -2  # where the run's cluster secret crosses a hot restart (memfd)
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
    """One ``collect`` child: spawned here with a pipe for its stdout, or, after this
    process's own hot restart, taken over (its pid and the pipe's read end crossed the
    exec). Its exit is seen through a pidfd, so that both kinds are watched alike."""

    def __init__(self, index: int, cmd: list[str], env: dict[str, str]) -> None:
        self.index = index
        self.cmd = cmd
        self.env = env
        self.pid: int | None = None
        self.returncode: int | None = None
        self.ready = asyncio.Event()
        self.stopping = False
        self._exited = asyncio.Event()
        self._pidfd = -1
        self._out = -1
        self._line = bytearray()

    def start(self) -> None:
        """Spawn the child (posix_spawn returns once it runs: nothing waits here)."""
        self.ready.clear()
        read_end, write_end = os.pipe()
        try:
            pid = os.posix_spawn(
                self.cmd[0], self.cmd, self.env, file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 1)]
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self.adopt(pid, read_end)

    def adopt(self, pid: int, out: int) -> None:
        """Watch the child ``pid`` and read its stdout from ``out``."""
        loop = asyncio.get_running_loop()
        self.pid, self.returncode, self._out = pid, None, out
        self._exited = asyncio.Event()
        os.set_inheritable(out, False)  # not into the next children
        os.set_blocking(out, False)
        self._pidfd = os.pidfd_open(pid)
        loop.add_reader(self._pidfd, self._reap)
        loop.add_reader(out, self._read)

    def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        assert self.pid is not None
        try:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.returncode = -1
        self._read()  # what it wrote last
        if self._out >= 0:
            loop.remove_reader(self._out)
            os.close(self._out)
            self._out = -1
        self._exited.set()

    def _read(self) -> None:
        while self._out >= 0:
            try:
                data = os.read(self._out, 65536)
            except BlockingIOError:
                return
            if not data:
                asyncio.get_running_loop().remove_reader(self._out)
                return
            self._line += data
            while b"\n" in self._line:
                raw, _, rest = bytes(self._line).partition(b"\n")
                self._line = bytearray(rest)
                line = raw.decode("utf-8", "replace")
                if "listening on" in line:
                    self.ready.set()  # the parent says where it listens, once, for all
                else:
                    print(f"[worker {self.index}] {line}", flush=True)

    def detach(self) -> tuple[int, int]:
        """Stop watching (this process is about to re-execute): the pid and the pipe's read
        end, which crosses the exec."""
        loop = asyncio.get_running_loop()
        if self._pidfd >= 0:
            loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        loop.remove_reader(self._out)
        os.set_blocking(self._out, True)
        os.set_inheritable(self._out, True)
        assert self.pid is not None
        return self.pid, self._out

    def alive(self) -> bool:
        return self.pid is not None and self.returncode is None

    async def hot_restart(self) -> bool:
        """SIGHUP to the child; True once it listens again (its new code), within
        ``READY_SECONDS``."""
        if not self.alive():
            return False
        assert self.pid is not None
        self.ready.clear()
        os.kill(self.pid, signal.SIGHUP)
        try:
            await asyncio.wait_for(self.ready.wait(), READY_SECONDS)
        except TimeoutError:
            log.error("collector worker %d did not come back from its hot restart", self.index)
            return False
        log.info("collector worker %d: hot restart done (pid %d)", self.index, self.pid)
        return True

    async def watch(self) -> None:
        """Start the child again whenever it dies, until the service stops."""
        while not self.stopping:
            await self._exited.wait()
            if self.stopping:
                return
            log.error(
                "collector worker %d exited (status %s): starting it again",
                self.index,
                self.returncode,
            )
            await asyncio.sleep(0.5)
            self.start()

    async def stop(self) -> None:
        self.stopping = True
        if self.alive():
            assert self.pid is not None
            os.kill(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self._exited.wait(), 30)
            except TimeoutError:
                os.kill(self.pid, signal.SIGKILL)
                await self._exited.wait()


async def serve_workers(
    collector_config: CollectorConfig,
    aggregator_config: AggregatorConfig,
    cluster_config: ClusterConfig,
) -> Inherited | None:
    """Serve until SIGTERM/SIGINT (None) or until a SIGHUP has rolled the children (what to
    hand this process's re-executed code: ``aggregator/hot_restart.py``)."""
    from aggregator import drain, hot_restart
    from aggregator.api.admintoken import AdminToken
    from aggregator.app import RUNNER_OPTIONS
    from aggregator.cluster import restart
    from aggregator.cluster.link_server import LINK_SERVER
    from aggregator.cluster.shard import create_shard_app
    from aggregator.service import SERVICE

    inherit = hot_restart.inherited()
    loaded: restart.Loaded | None = None
    children: list[tuple[int, int]] = []
    host, port = collector_config.host, collector_config.port
    secret = secrets.token_hex(32)
    if inherit is not None:
        try:
            loaded = restart.load_shard(inherit)
            extra = loaded.state["extra"]
            port = int(extra["port"])
            children = [(int(pid), int(fd)) for pid, fd in extra["workers"]]
            secret = bytes(loaded.secrets.pop(CLUSTER_SECRET_DAY)).hex()
        except (ValueError, KeyError, TypeError, EOFError, OSError) as exc:  # StateError too
            log.error(
                "hot restart %d: the state left by the code before cannot be taken (%s); "
                "stopping the collector workers it left and starting cold",
                inherit.generation,
                type(exc).__name__,
            )
            if loaded is not None:
                loaded.forget()
            for fd in (inherit.listen_fd, inherit.link_fd):  # new ports for new workers
                if fd is not None:
                    os.close(fd)
            inherit, loaded, children = None, None, []
            _stop_orphans()
    # Holds the public port for the children (and picks it if port is 0); never listens.
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError as exc:
        raise preflight.bind_error(exc, host, port, "host", "port") from None
    port = holder.getsockname()[1]

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
    link = app[LINK_SERVER]
    if inherit is not None:
        restart.take_over_shard(app, inherit, loaded)
        api_sock = _inherited(inherit.listen_fd)
        assert inherit.link_fd is not None
        link.sock = _inherited(inherit.link_fd)
    else:
        api_sock = socket.create_server(("127.0.0.1", 0), backlog=LISTEN_BACKLOG)
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    site = web.SockSite(runner, api_sock, backlog=LISTEN_BACKLOG)
    await site.start()
    api_port = api_sock.getsockname()[1]
    link_port = link.port

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
    if children:  # after a hot restart: the same children, listening all along
        for worker, (pid, out) in zip(workers, children, strict=False):
            worker.adopt(pid, out)
            worker.ready.set()
    for worker in workers:
        if worker.pid is None:
            worker.start()
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
    hangup = False
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rolling: list[asyncio.Task[None]] = []

    async def roll() -> None:
        nonlocal hangup
        for worker in workers:
            if not worker.stopping:
                await worker.hot_restart()
        log.info("hot restart: every collector worker rolled; now this process")
        hangup = True
        stop.set()

    def on_hangup() -> None:
        if rolling and not rolling[-1].done():
            log.warning("hot restart: a roll of the collector workers is already under way")
            return
        log.info("hot restart: rolling the collector workers one at a time, then this process")
        rolling.append(asyncio.create_task(roll()))

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    await stop.wait()
    if hangup:
        for task in watchers:
            task.cancel()
        handed = [worker.detach() for worker in workers]
        assert link.sock is not None
        listen_fd, link_fd = os.dup(api_sock.fileno()), os.dup(link.sock.fileno())
        await site.stop()
        drain.start(app)
        await drain.until_quiet(runner)
        service = app[SERVICE]
        service.handing_over = link.handing_over = True
        await runner.cleanup()
        holder.close()
        process_secret = bytearray(bytes.fromhex(secret))
        state_fd = restart.shard_state(
            app, {"port": port, "workers": handed}, {CLUSTER_SECRET_DAY: process_secret}
        )
        process_secret[:] = bytes(len(process_secret))
        return hot_restart.Inherited(listen_fd, state_fd, service.generation + 1, link_fd)
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
    return None


def _stop_orphans() -> None:
    """SIGTERM every child of this process (workers of the code before a hot restart whose
    state could not be read) and wait for them: they deliver what they hold and exit."""
    pid = os.getpid()
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return
    for child in (int(c) for c in found):
        try:
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)  # before the event loop serves anything: a short wait
        except (ProcessLookupError, ChildProcessError):
            continue


def _inherited(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock


def preflight_error() -> Exception:
    from collector.errors import ConfigError

    return ConfigError("workers", f"the collector workers did not start in {READY_SECONDS:.0f} s")
