"""CPU per request of each server's request path, in one process, without sockets.

    python -m benchmarks.inproc [--requests N] [--repeat R] [--only a,b]

Each server's real HTTP protocol (aiohttp's ``RequestHandler``, or StreamTally's own
protocol for reports) is fed the benchmark's requests (``benchmarks/traffic.py``, ~700
bytes of browser headers each) over 64 in-memory connections, 64 requests at a time; the
figure is the main thread's CPU time divided by the requests answered, the best of
``--repeat`` rounds. What the kernel does (sockets, epoll) is left out, so the numbers are
below wrk's, but they hold still on a busy machine, where wrk's do not: compare the rows.
StreamTally runs the whole service (``create_app``, the embedded ClickHouse, aggregation
on); its flush does not run during a round.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from benchmarks import pool as poolmod
from benchmarks.ohttp_keys import KeyConfig
from benchmarks.traffic import Traffic, load_templates

CONNECTIONS = 64
GC_PAUSES: dict[int, list[float]] = {0: [], 1: [], 2: []}  # seconds, by generation
GC_THRESHOLD: list[int] = []
_recording = [False]  # GC pauses are kept only while requests are driven


def _gc_timer() -> Callable[[str, dict[str, int]], None]:
    started = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        elif _recording[0]:
            GC_PAUSES[info["generation"]].append(time.perf_counter() - started)

    return callback


Factory = Callable[[], asyncio.Protocol]


class _Transport(asyncio.Transport):
    """Collects what a protocol writes; counts answers by their status lines."""

    def __init__(self, index: int, on_answer: Callable[[int], None]) -> None:
        super().__init__()
        self._peer = ("127.0.0.1", 40000 + index)
        self._on_answer = on_answer
        self._closing = False
        self._protocol: asyncio.BaseProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._on_answer(bytes(data).count(b"HTTP/1.1 "))

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self._peer, "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0


async def drive(factory: Factory, requests: Sequence[bytes]) -> float:
    """µs of main-thread CPU per request over ``requests`` (64 connections)."""
    loop = asyncio.get_running_loop()
    answered = 0
    target = 0
    waiter: asyncio.Future[None] | None = None

    def on_answer(n: int) -> None:
        nonlocal answered
        answered += n
        if waiter is not None and answered >= target and not waiter.done():
            waiter.set_result(None)

    protocols = []
    for i in range(CONNECTIONS):
        transport = _Transport(i, on_answer)
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocols.append(protocol)
    await asyncio.sleep(0)
    _recording[0] = True
    started = time.thread_time()
    for first in range(0, len(requests), CONNECTIONS):
        batch = requests[first : first + CONNECTIONS]
        target += len(batch)
        waiter = loop.create_future()
        for protocol, request in zip(protocols, batch, strict=False):
            protocol.data_received(request)
        if answered < target:
            await waiter
    spent = time.thread_time() - started
    _recording[0] = False
    for protocol in protocols:
        protocol.connection_lost(None)
    await asyncio.sleep(0)
    return 1e6 * spent / len(requests)


def _requests(
    n: int, seed: int, path: str, key: KeyConfig | None, forwarded: bool = True
) -> list[bytes]:
    traffic = Traffic(load_templates(), concurrent=5000, seed=seed, start_ms=int(time.time() * 1e3))
    return poolmod.build(
        traffic, n, host="127.0.0.1", path=path, key=key, forwarded=forwarded
    ).requests


async def _aiohttp_factory(
    app: web.Application, *, lean: bool = False, **options: Any
) -> tuple[Factory, web.AppRunner]:
    from collector.lean import LeanAppRunner

    runner = LeanAppRunner(app, **options) if lean else web.AppRunner(app, **options)
    await runner.setup()
    server = runner.server
    assert server is not None
    return server, runner


async def run(
    names: Sequence[str], n: int, repeat: int, seed: int, lean: bool = True
) -> dict[str, float]:
    """Every server set up at once, then ``repeat`` rounds that each measure every server
    in turn (so that a busy spell of the machine hits all rows alike); the best round each."""
    from benchmarks.baseline_server import bare_app, hpke_app

    results: dict[str, list[float]] = {name: [] for name in names}
    plans: dict[str, tuple[Factory, str, KeyConfig | None]] = {}
    runners: list[web.AppRunner] = []
    if "aiohttp" in names:
        factory, runner = await _aiohttp_factory(bare_app(), access_log=None)
        plans["aiohttp"] = (factory, "/v1/r/x", None)
        runners.append(runner)
    if "aiohttp+hpke" in names:
        factory, runner = await _aiohttp_factory(hpke_app(), access_log=None)
        plans["aiohttp+hpke"] = (factory, "/v1/r/x", await _keys_of(factory))
        runners.append(runner)
    with tempfile.TemporaryDirectory(prefix="st-inproc-") as tmp:
        app = None
        if any(name.startswith("streamtally") for name in names):
            app, factory, runner, path = await _streamtally(Path(tmp), lean)
            runners.append(runner)
            plans["streamtally-plain"] = (factory, path, None)
            plans["streamtally-sealed"] = (factory, path, await _keys_of(factory))
        gc.collect()
        gc.freeze()
        if GC_THRESHOLD:
            gc.set_threshold(*GC_THRESHOLD)
        for r in range(repeat):
            for i, name in enumerate(names):
                factory, path, key = plans[name]
                requests = _requests(n, seed + 100 * i + r, path, key)
                results[name].append(await drive(factory, requests))
        if app is not None:
            await _flush_stall(app)
        for runner in runners:
            await runner.cleanup()
    return {name: min(values) for name, values in results.items()}


async def _keys_of(factory: Factory) -> KeyConfig:
    from benchmarks.ohttp_keys import parse_ohttp_keys as parse

    chunks: list[bytes] = []

    class _Keys(_Transport):
        def write(self, data: bytes | bytearray | memoryview) -> None:
            chunks.append(bytes(data))

    transport = _Keys(0, lambda n: None)
    protocol = factory()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /v1/keys HTTP/1.1\r\nHost: x\r\n\r\n")
    for _ in range(100):
        await asyncio.sleep(0)
        raw = b"".join(chunks)
        if b"\r\n\r\n" in raw:
            head, _, body = raw.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                protocol.connection_lost(None)
                return parse(body[:length])[0]
    raise RuntimeError("no answer to GET /v1/keys")


async def _streamtally(
    data_dir: Path, lean: bool
) -> tuple[web.Application, Factory, web.AppRunner, str]:
    """The whole service with one account (k = 2, every origin), as the benchmark sets it."""
    from aggregator.api.auth import ACCOUNT_STORE
    from aggregator.app import RUNNER_OPTIONS, create_app
    from aggregator.config import AggregatorConfig
    from aggregator.storage.accounts_store import AccountStore
    from collector.config import CollectorConfig

    collector = CollectorConfig(
        data_dir=data_dir, trusted_proxies=("127.0.0.1/32",), metrics_listen=""
    )
    aggregator = AggregatorConfig(admin_token="sta_" + "x" * 32, default_k=2, flush_seconds=3600.0)
    app = await create_app(collector, aggregator)
    factory, runner = await _aiohttp_factory(app, lean=lean, **RUNNER_OPTIONS)
    store: AccountStore = app[ACCOUNT_STORE]
    account, _ = await store.create("bench", ["*"], k=2)
    return app, factory, runner, f"/v1/r/{account.embed_key}"


async def _flush_stall(app: web.Application) -> float:
    """The longest the event loop is held during a flush that closes the open minute (what
    a request arriving meanwhile waits), in ms of process CPU (all threads: the loop's own
    slices and a ClickHouse call that holds the GIL; time the OS gave to other processes
    on a busy machine is left out), and of the loop thread's CPU alone; prints both."""
    from aggregator.service import SERVICE

    service = app[SERVICE]
    longest = [0.0, 0.0, 0.0]  # wall, process CPU, loop-thread CPU
    running = True

    async def ticker() -> None:
        last = (time.perf_counter(), time.process_time(), time.thread_time())
        while running:
            await asyncio.sleep(0)
            now = (time.perf_counter(), time.process_time(), time.thread_time())
            for i in range(3):
                longest[i] = max(longest[i], now[i] - last[i])
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    for pauses in GC_PAUSES.values():
        pauses.clear()
    _recording[0] = True
    report = await service.flush(time.time() + 120)
    _recording[0] = False
    took = time.perf_counter() - started
    running = False
    await task
    wall, cpu, own = (1e3 * x for x in longest)
    print(
        f"flush: {1e3 * took:.1f} ms, {report.rows} rows; longest loop stall: {cpu:.1f} ms "
        f"of process CPU, {own:.1f} ms of loop-thread CPU, {wall:.1f} ms wall"
    )
    return cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inproc")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--only", default="aiohttp,aiohttp+hpke,streamtally-plain,streamtally-sealed"
    )
    parser.add_argument(
        "--no-lean", action="store_true", help="StreamTally on aiohttp's request path only"
    )
    parser.add_argument("--gc-threshold", help="gc.set_threshold after start-up, e.g. 700,10,10")
    args = parser.parse_args(argv)
    if args.gc_threshold:
        GC_THRESHOLD[:] = [int(x) for x in args.gc_threshold.split(",")]
    names = [s.strip() for s in args.only.split(",") if s.strip()]
    gc.callbacks.append(_gc_timer())
    result = uvloop.run(run(names, args.requests, args.repeat, args.seed, not args.no_lean))
    for name, us in result.items():
        print(f"{name:20s} {us:8.1f} µs/request  {1e6 / us:10,.0f} requests per CPU-second")
    for generation, pauses in GC_PAUSES.items():
        if pauses:
            print(
                f"GC generation {generation}: {len(pauses)} passes, "
                f"max {1e3 * max(pauses):.2f} ms, total {1e3 * sum(pauses):.1f} ms"
            )
    if "aiohttp" in result and "streamtally-plain" in result:
        print(f"plain / aiohttp: {result['aiohttp'] / result['streamtally-plain']:.0%}")
    if "aiohttp+hpke" in result and "streamtally-sealed" in result:
        ratio = result["aiohttp+hpke"] / result["streamtally-sealed"]
        print(f"sealed / aiohttp+hpke: {ratio:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
