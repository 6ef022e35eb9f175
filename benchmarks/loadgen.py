"""An HTTP/1.1 load generator on raw asyncio protocols (uvloop): open loop or closed loop.

Open loop: request ``i`` is due at ``t0 + i / rate``, whatever happened to earlier ones.
Its latency is measured from that due time to the last byte of its response, so time a
request spends waiting for a free connection because the server is slow counts as
latency: no coordinated omission (the correction wrk2 makes). Closed loop (``rate=None``):
each connection sends its next request as soon as the previous answer arrived, like wrk;
only its throughput is meaningful.

In open loop a callback runs on every event-loop iteration (the loop polls, never sleeps;
the generator has a core of its own) and hands due requests to idle connections; a
connection that finishes a response takes the next due request at once. No per-request
timer, future or coroutine exists, which is what lets one Python core offer tens of
thousands of requests per second. Requests are pre-built bytes, each sent once, in order.
How late each request went out after its due time is recorded too (``send_lag``): it stays
near zero while the generator keeps up and connections are free.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import resource
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import cast

CLOSED_LOOP_TICK_SECONDS = 0.01
_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = b"\r\ncontent-length:"
_CONTENT_LENGTH_TITLE = b"\r\nContent-Length:"


class ProtocolError(Exception):
    """The server answered something this generator does not parse."""


@dataclass
class RunResult:
    """What one run measured. Latencies in seconds, one per answered request."""

    offered_rate: float | None  # None: closed loop
    duration: float  # seconds from the first due time to the last answer
    sent: int
    answered: int
    statuses: Counter[int]
    latencies: array[float]
    errors: int  # connections lost or unparsable answers
    generator_cpu: float  # CPU seconds this process used during the run
    answered_indexes: array[int] = field(default_factory=lambda: array("q"))
    send_lag: array[float] = field(default_factory=lambda: array("d"))
    generator_stall: float = 0.0  # the longest the generator's own loop went without a turn (s)

    def send_lag_percentile(self, q: float) -> float:
        """How late (s) requests went out after their due time: near zero while the generator
        keeps up and a connection is free; it grows when the server holds every connection."""
        return _percentile(self.send_lag, q)

    @property
    def achieved_rate(self) -> float:
        return self.answered / self.duration if self.duration > 0 else 0.0

    @property
    def generator_busy(self) -> float:
        """Fraction of one core the generator used (open loop polls, so about 1.0)."""
        return self.generator_cpu / self.duration if self.duration > 0 else 0.0

    def percentile(self, q: float) -> float:
        """The q-quantile (0..1) of latency in seconds, nearest rank; NaN if none."""
        return _percentile(self.latencies, q)


def _percentile(values: array[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


class _Conn(asyncio.Protocol):
    __slots__ = ("buf", "gen", "index", "sent", "transport")

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.index = -1  # request in flight, -1 if idle
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while buf:
            end = buf.find(_HEADER_END)
            if end < 0:
                break
            length = 0
            # Fast path for the usual spelling; any other goes through lower().
            at = buf.find(_CONTENT_LENGTH_TITLE, 0, end)
            head = buf
            if at < 0 and buf.find(b"ength", 0, end) >= 0:
                head = buf[:end].lower()
                at = head.find(_CONTENT_LENGTH)
                if at < 0 and b"\r\ntransfer-encoding:" in head:
                    self.gen.fail(self)
                    return
            if at >= 0:
                stop = head.find(b"\r\n", at + 2, end + 2)
                length = int(head[at + len(_CONTENT_LENGTH) : stop if stop >= 0 else end])
            total = end + 4 + length
            if len(buf) < total:
                break
            code = buf[9:12]
            if code == b"204":
                status = 204
            else:
                try:
                    status = int(code)
                except ValueError:
                    self.gen.fail(self)
                    return
            buf = buf[total:] if len(buf) > total else b""
            self.gen.answered(self, status)
        self.buf = buf

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.lost(self)


class _Generator:
    def __init__(
        self,
        requests: Sequence[bytes],
        rate: float | None,
        duration: float,
        record_indexes: bool,
    ) -> None:
        self.requests = requests
        self.rate = rate
        self.total = len(requests) if rate is None else min(len(requests), int(rate * duration))
        self.duration = duration
        self.next = 0  # next request index to send
        self.inflight = 0
        self.idle: list[_Conn] = []
        self.conns: list[_Conn] = []
        self.statuses: dict[int, int] = {}
        self.latencies: array[float] = array("d")
        self.indexes: array[int] = array("q")
        self.record_indexes = record_indexes
        self.errors = 0
        self.t0 = 0.0
        self.last = 0.0
        self.finished: asyncio.Future[None] | None = None
        self.stopping = False
        self.progress: Callable[[int, int, float], None] | None = None
        self.next_progress = 0.0
        self.send_lag: array[float] = array("d")  # due time -> written to the socket
        self.stall = 0.0  # longest time between two ticks (open loop)
        self.last_tick = 0.0

    def due(self, now: float) -> int:
        """How many requests are due by ``now`` (open loop) or all of them (closed loop)."""
        if self.rate is None:
            return self.total
        return min(self.total, int((now - self.t0) * self.rate) + 1)

    def send(self, conn: _Conn, now: float) -> None:
        index = self.next
        self.next = index + 1
        self.inflight += 1
        conn.index = index
        conn.sent = now
        if self.rate is not None:
            self.send_lag.append(now - self.t0 - index / self.rate)
        assert conn.transport is not None
        conn.transport.write(self.requests[index])

    def answered(self, conn: _Conn, status: int) -> None:
        now = perf_counter()
        index = conn.index
        if index < 0:
            self.fail(conn)
            return
        rate = self.rate
        intended = conn.sent if rate is None else self.t0 + index / rate
        self.latencies.append(now - intended)
        if self.record_indexes:
            self.indexes.append(index)
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.inflight -= 1
        self.last = now
        conn.index = -1
        if not self.stopping and self.next < self.due(now):
            self.send(conn, now)
        else:
            self.idle.append(conn)
            self.check_finished()

    def fail(self, conn: _Conn) -> None:
        """An unparsable answer: count it, drop the connection (its request is lost)."""
        if conn.transport is not None:
            conn.transport.abort()

    def lost(self, conn: _Conn) -> None:
        if conn.index >= 0:
            self.errors += 1
            self.inflight -= 1
            conn.index = -1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn in self.conns:
            self.conns.remove(conn)
        if not self.conns:
            self.stopping = True
        self.check_finished()

    def check_finished(self) -> None:
        done = self.inflight == 0 and (self.stopping or self.next >= self.total)
        if done and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    def tick(self) -> None:
        """Hand due requests to idle connections; runs on every loop iteration (open loop:
        the loop never sleeps, so a due request goes out within microseconds) or every
        10 ms (closed loop: answers drive it)."""
        finished = self.finished
        if finished is None or finished.done():
            return
        now = perf_counter()
        if self.rate is not None and self.last_tick:
            self.stall = max(self.stall, now - self.last_tick)
        self.last_tick = now
        if now - self.t0 >= self.duration:
            self.stopping = True  # time is up: wait only for what is in flight
            self.check_finished()
        else:
            due = self.due(now)
            idle = self.idle
            while idle and self.next < due:
                self.send(idle.pop(), now)
        if self.progress is not None and now >= self.next_progress:
            self.progress(len(self.latencies), self.total, now - self.t0)
            self.next_progress += 1.0
        loop = asyncio.get_running_loop()
        if self.rate is None:
            loop.call_later(CLOSED_LOOP_TICK_SECONDS, self.tick)
        else:
            loop.call_soon(self.tick)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float | None,
    duration: float,
    connections: int = 64,
    record_indexes: bool = False,
    progress: Callable[[int, int, float], None] | None = None,
) -> RunResult:
    """Send ``requests`` (raw HTTP/1.1, keep-alive) in order at ``rate`` per second (or as
    fast as the server answers, if None) for at most ``duration`` seconds."""
    gen = _Generator(requests, rate, duration, record_indexes)
    loop = asyncio.get_running_loop()
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Conn(gen), host, port)
        gen.conns.append(conn)
    gen.idle = list(gen.conns)
    gen.finished = loop.create_future()
    # The generator's own cyclic GC would walk every request it holds (and the runner's
    # pools) in one pause, sending late: a stall of the generator, measured as latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    cpu0 = _cpu_seconds()
    gen.t0 = perf_counter()
    gen.last = gen.t0
    gen.progress = progress
    gen.next_progress = gen.t0 + 1.0
    loop.call_soon(gen.tick)
    # Grace for answers still in flight when time is up.
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(gen.finished), duration + 10.0)
    finally:
        gc.enable()
        gc.unfreeze()
    cpu = _cpu_seconds() - cpu0
    for conn in gen.conns:
        if conn.transport is not None:
            conn.transport.close()
    return RunResult(
        offered_rate=rate,
        duration=max(gen.last - gen.t0, 1e-9),
        sent=gen.next,
        answered=len(gen.latencies),
        statuses=Counter(gen.statuses),
        latencies=gen.latencies,
        errors=gen.errors,
        generator_cpu=cpu,
        answered_indexes=gen.indexes,
        send_lag=gen.send_lag,
        generator_stall=gen.stall,
    )


def pin_to(cpu: int) -> None:
    """Pin this process to one core (if the machine has it)."""
    if cpu in os.sched_getaffinity(0) or cpu < (os.cpu_count() or 1):
        os.sched_setaffinity(0, {cpu})


def now_wall() -> float:
    return time.time()
