"""The benchmark run: every server side by side, same machine, same generators, one run.

For each target: saturation with wrk (closed loop: the most it answers per second on its
one core), then open-loop runs at fractions of that saturation with the generator of
``loadgen`` (latency without coordinated omission), with the server's CPU time around each.
StreamTally gets three more phases: memory per active session, correctness (events sent vs
events counted, views sent vs views stored) and the per-step pipeline times from /metrics.

Events per report: StreamTally's reports carry ``batches[0]`` events each in every phase (the
player snippet queues several per report, player-snippet/src/batch.js); every further entry
of ``batches`` gets a saturation run of its own, so that reports/s and events/s at one and at
several events per report come from the same run. Viewers per core at a heartbeat of H s:
events per CPU-second x H (a viewer sends one ``t`` event every H s; its few state changes
per session are left out).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import uvloop

from benchmarks import loadgen, pool, promtext, servers, steal, traffic, wrk
from benchmarks.ohttp_keys import KeyConfig, parse_ohttp_keys

Progress = Callable[[str], None]

NGINX = "nginx"
AIOHTTP = "aiohttp"
HPKE = "aiohttp+hpke"
ST_PLAIN = "streamtally-plain"
ST_SEALED = "streamtally-sealed"
TARGETS = (NGINX, AIOHTTP, HPKE, ST_PLAIN, ST_SEALED)
LABELS = {
    NGINX: "nginx 204 (HTTP limit)",
    AIOHTTP: "aiohttp+uvloop 204 (framework limit)",
    HPKE: "aiohttp+uvloop + 1 HPKE open (sealed ceiling)",
    ST_PLAIN: "StreamTally, plain CMCD",
    ST_SEALED: "StreamTally, sealed CMCD",
}
SEALED = {HPKE, ST_SEALED}
EXPECTED_CEILING = {ST_PLAIN: AIOHTTP, ST_SEALED: HPKE}  # cannot be faster than these
BATCHES = (1, 4)  # events per report: the first for every phase, the others saturation only
# A fixed-rate run during which the host took this much of the cores (benchmarks/steal.py)
# measured the host: it is run again, at most this many times.
STEAL_LIMIT_MS = 50.0  # steal is counted in 10 ms ticks: one or two are common
STEAL_RETRIES = 2
HEARTBEATS_S = (10, 30)  # seconds between a viewer's t events, for viewers per core


@dataclass(frozen=True)
class Plan:
    """How long and how much: the operator's full run, or CI's quick one."""

    name: str
    saturation_seconds: float
    rate_seconds: float
    fractions: tuple[float, ...]  # of saturation, for the latency curve (has 0.5 and 0.8)
    connections: int  # open-loop generator
    wrk_connections: int
    concurrent_sessions: int
    memory_sessions: int
    memory_events: int  # events each memory session sends (it stays active)
    correctness_sessions: int
    baseline_pool: int  # distinct requests for stateless baselines (reused)
    warmup_seconds: float
    generator_check_rps: float | None  # show the generator offers this much to nginx


FULL = Plan(
    name="full",
    saturation_seconds=8.0,
    rate_seconds=6.0,
    fractions=(0.1, 0.3, 0.5, 0.65, 0.8, 0.9, 1.0),
    connections=64,
    wrk_connections=64,
    concurrent_sessions=5000,
    memory_sessions=30_000,
    memory_events=3,
    correctness_sessions=200,
    baseline_pool=50_000,
    warmup_seconds=2.0,
    generator_check_rps=40_000.0,
)
QUICK = Plan(
    name="quick",
    saturation_seconds=1.0,
    rate_seconds=1.0,
    fractions=(0.5, 0.8),
    connections=32,
    wrk_connections=32,
    concurrent_sessions=2000,
    memory_sessions=1000,
    memory_events=3,
    correctness_sessions=20,
    baseline_pool=5_000,
    warmup_seconds=0.0,
    generator_check_rps=None,
)


# -- results ---------------------------------------------------------------------------------


@dataclass
class RatePoint:
    """One open-loop run at a fixed offered rate. Latencies in milliseconds."""

    fraction: float
    offered_rps: float
    achieved_rps: float
    sent: int
    answered: int
    statuses: dict[str, int]
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    generator_busy: float
    send_lag_p99_ms: float  # due time -> written; small unless all connections were busy
    server_cpu_seconds: float
    cpu_seconds_per_1000: float
    kept_up: bool  # achieved >= 97% of offered and no errors
    # StreamTally with its metrics: what ran in the server meanwhile (None: not known)
    gc_pauses_over_10ms: int | None = None  # cyclic GC passes that held it >= 10 ms
    flushes: int | None = None
    generator_stall_ms: float = 0.0  # the longest the generator's loop went without a turn
    steal_ms: float | None = None  # time the host took from the two cores (benchmarks/steal.py)
    helper_threads_cpu_ms: float | None = None  # the server's threads but its loop's (chDB)


@dataclass
class Saturation:
    tool: str  # wrk | loadgen (closed loop)
    rps: float
    requests: int
    non_2xx: int
    socket_errors: int
    server_cpu_seconds: float
    cpu_seconds_per_1000: float
    server_busy: float  # CPU seconds / wall seconds of the server
    wrapped: bool

    @property
    def cpu_capacity_rps(self) -> float:
        """Requests per CPU-second of the server: what one core it had to itself would answer
        if CPU were the only limit. Less sensitive than ``rps`` to other load on the machine."""
        return 1000.0 / self.cpu_seconds_per_1000 if self.cpu_seconds_per_1000 > 0 else 0.0

    @property
    def clean(self) -> bool:
        """The server had its core to itself: anything else on it shows as busy < 90%."""
        return self.server_busy >= 0.9


@dataclass
class BatchRun:
    """One saturation run with ``batch`` events per report (fewer at a session's end)."""

    batch: int
    events_per_report: float  # measured: the events of the reports answered, on average
    saturation: Saturation

    @property
    def events_rps(self) -> float:
        return self.saturation.rps * self.events_per_report

    @property
    def events_per_cpu_second(self) -> float:
        return self.saturation.cpu_capacity_rps * self.events_per_report

    def viewers_per_core(self, heartbeat_s: float) -> float:
        """Viewers one core of the server keeps up with, each sending an event every
        ``heartbeat_s`` seconds: events per CPU-second / (1 / heartbeat)."""
        return self.events_per_cpu_second * heartbeat_s

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "events_rps": round(self.events_rps, 1),
            "events_per_cpu_second": round(self.events_per_cpu_second, 1),
            "viewers_per_core": {str(h): round(self.viewers_per_core(h)) for h in HEARTBEATS_S},
        }


@dataclass
class Processes:
    """``serve --workers N`` at saturation: what each process of the server spent."""

    workers: int
    aggregator_cpu_seconds: float
    aggregator_busy: float  # CPU seconds / wall seconds
    aggregator_events_per_cpu_second: float
    collector_cpu_seconds: list[float]
    collector_busy: list[float]
    collector_reports_per_cpu_second: float  # reports answered / the collectors' CPU seconds


@dataclass
class TargetResult:
    name: str
    label: str
    sealed: bool
    saturation: Saturation | None = None
    batches: list[BatchRun] = field(default_factory=list)  # StreamTally: events per report
    points: list[RatePoint] = field(default_factory=list)
    steps_us: dict[str, float] = field(default_factory=dict)  # per report, at saturation
    notes: list[str] = field(default_factory=list)
    processes: Processes | None = None  # serve --workers N: each process at saturation

    def point(self, fraction: float) -> RatePoint | None:
        return next((p for p in self.points if abs(p.fraction - fraction) < 1e-9), None)


@dataclass
class Memory:
    sessions_sent: int
    active_sessions_before: float
    active_sessions_after: float
    rss_before: int
    rss_after: int
    bytes_per_session: float
    mb_per_10k_sessions: float


@dataclass
class PhaseCount:
    """Events of one load phase: sent (answered 204) and counted by the service."""

    phase: str
    tool: str
    answered_204: int  # loadgen: exactly the answered requests; wrk: completed ones
    events_sent: int
    sent_upper_bound: int  # wrk: requests handed out (a few may be in flight at its end)
    events_counted: int  # Δ streamtally_events_accepted_total
    dropped: int  # Δ streamtally_events_dropped_total
    rejected: int  # Δ streamtally_reports_rejected_total
    ok: bool


@dataclass
class Correctness:
    phases: list[PhaseCount]
    events_sent: int  # over the loadgen phases: exact
    events_counted: int
    sessions: int
    views_expected: int
    views_stored: int
    ok: bool
    detail: str


# -- helpers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Run the block on one core (the generator's), then give this process every core."""
    everything = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, everything)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3) if not math.isnan(seconds) else float("nan")


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        "nginx": _version(["nginx", "-v"]),
        "wrk": _version(["wrk", "-v"]),
    }


def _version(command: list[str]) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0] if text else None


# -- the run ---------------------------------------------------------------------------------


class Bench:
    def __init__(
        self,
        plan: Plan,
        workdir: Path,
        *,
        targets: Sequence[str] = TARGETS,
        progress: Progress,
        profile: bool = False,
        seed: int = 42,
        artifacts: Path | None = None,
        remote: servers.Remote | None = None,
        step: Callable[[str], None] | None = None,
        batches: Sequence[int] = BATCHES,
        workers: int = 1,
    ) -> None:
        if not batches or min(batches) < 1:
            raise ValueError("batches: one or more event counts per report, each at least 1")
        self.batches = tuple(batches)
        self.plan = plan
        self.workers = workers
        self.workdir = workdir
        self.targets = [t for t in TARGETS if t in targets]
        self.say = progress
        self.remote = remote
        self.step = step or (lambda label: None)
        self.profile = profile
        self.artifacts = artifacts or workdir
        self.seed = seed
        available = servers.cores()
        if len(available) >= 2:
            self.generator_cpu: int | None = available[0]
            self.server_cpu: int | None = available[1]
        else:
            self.generator_cpu = self.server_cpu = None
        # serve --workers N: the aggregator and its collectors inherit one affinity: every
        # core but the generator's when that leaves them two or more; else none (they share
        # the machine, the generator's core too).
        rest = frozenset(available) - {self.generator_cpu}
        self.server_cpus: frozenset[int] | None = (
            frozenset({self.server_cpu}) if self.server_cpu is not None else None
        )
        if workers > 1:
            self.server_cpus = rest if len(rest) >= 2 else None
        self.results: dict[str, TargetResult] = {}
        self.memory: Memory | None = None
        self.correctness: Correctness | None = None
        self.profile_summary: dict[str, Any] | None = None
        self._memory_run: loadgen.RunResult | None = None
        self.generator_check: dict[str, Any] | None = None
        self.flush_stats: dict[str, Any] | None = None
        self.notes: list[str] = []
        self.start_ms = int(time.time() * 1000)

    # -- generators ------------------------------------------------------------------------

    def _wrk(
        self, server: servers.Server, requests: pool.Pool, seconds: float
    ) -> tuple[Saturation, wrk.WrkResult | None]:
        if wrk.available():
            data, index = pool.write_wrk_files(requests, self.workdir / "wrk")
            cpu0, wall0 = server.cpu_seconds(), time.monotonic()
            result = wrk.run(
                server.url + "/",
                data,
                index,
                duration=seconds,
                connections=self.plan.wrk_connections,
                cpu=self.generator_cpu,
                workdir=self.workdir / "wrk",
            )
            cpu = server.cpu_seconds() - cpu0
            wall = time.monotonic() - wall0
            time.sleep(0.3)  # answers to requests in flight when wrk stopped
            return (
                Saturation(
                    tool="wrk",
                    rps=result.rate,
                    requests=result.requests,
                    non_2xx=result.non_2xx,
                    socket_errors=result.socket_errors,
                    server_cpu_seconds=cpu,
                    cpu_seconds_per_1000=cpu / max(result.requests, 1) * 1000,
                    server_busy=cpu / wall,
                    wrapped=result.wrapped,
                ),
                result,
            )
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        run = self._loadgen(server, requests.requests, None, seconds)
        cpu = server.cpu_seconds() - cpu0
        wall = time.monotonic() - wall0
        non_2xx = sum(n for s, n in run.statuses.items() if not 200 <= s < 300)
        return (
            Saturation(
                tool="loadgen (closed loop)",
                rps=run.achieved_rate,
                requests=run.answered,
                non_2xx=non_2xx,
                socket_errors=run.errors,
                server_cpu_seconds=cpu,
                cpu_seconds_per_1000=cpu / max(run.answered, 1) * 1000,
                server_busy=cpu / wall,
                wrapped=False,
            ),
            None,
        )

    def _loadgen(
        self,
        server: servers.Server,
        requests: Sequence[bytes],
        rate: float | None,
        seconds: float,
        label: str = "",
    ) -> loadgen.RunResult:
        tty = sys.stderr.isatty()

        def tick(done: int, total: int, elapsed: float) -> None:
            if tty:
                print(
                    f"\r    {label} {elapsed:4.0f} s  {done:>9,} answered",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

        with pinned(self.generator_cpu):
            result = uvloop.run(
                loadgen.run(
                    server.host,
                    server.port,
                    requests,
                    rate=rate,
                    duration=seconds,
                    connections=self.plan.connections,
                    progress=tick,
                )
            )
        if tty:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)
        return result

    def _point(
        self, server: servers.Server, requests: Sequence[bytes], fraction: float, rate: float
    ) -> tuple[RatePoint, loadgen.RunResult]:
        cpu0 = server.cpu_seconds()
        inside0 = self._inside(server)
        stolen0 = steal.seconds(self._cores())
        helpers0 = self._helpers_cpu(server)
        run = self._loadgen(server, requests, rate, self.plan.rate_seconds, f"{fraction:.0%}")
        cpu = server.cpu_seconds() - cpu0
        stolen1 = steal.seconds(self._cores())
        helpers1 = self._helpers_cpu(server)
        inside = self._inside(server)
        slow_gc = flushes = None
        if inside0 is not None and inside is not None:
            slow_gc = round(inside[0] - inside0[0])
            flushes = round(inside[1] - inside0[1])
        statuses = {str(s): n for s, n in sorted(run.statuses.items())}
        kept_up = run.achieved_rate >= 0.97 * rate and run.errors == 0
        point = RatePoint(
            fraction=fraction,
            offered_rps=round(rate, 1),
            achieved_rps=round(run.achieved_rate, 1),
            sent=run.sent,
            answered=run.answered,
            statuses=statuses,
            errors=run.errors,
            p50_ms=_ms(run.percentile(0.5)),
            p90_ms=_ms(run.percentile(0.9)),
            p99_ms=_ms(run.percentile(0.99)),
            p999_ms=_ms(run.percentile(0.999)),
            max_ms=_ms(max(run.latencies, default=float("nan"))),
            generator_busy=round(run.generator_busy, 3),
            send_lag_p99_ms=_ms(run.send_lag_percentile(0.99)),
            server_cpu_seconds=round(cpu, 3),
            cpu_seconds_per_1000=round(cpu / max(run.answered, 1) * 1000, 4),
            kept_up=kept_up,
            gc_pauses_over_10ms=slow_gc,
            flushes=flushes,
            generator_stall_ms=_ms(run.generator_stall),
            steal_ms=None if stolen0 is None or stolen1 is None else _ms(stolen1 - stolen0),
            helper_threads_cpu_ms=(
                None if helpers0 is None or helpers1 is None else _ms(helpers1 - helpers0)
            ),
        )
        self.say(
            f"    {fraction:>4.0%} of saturation = {rate:>9,.0f} req/s offered: "
            f"{run.achieved_rate:>9,.0f} achieved, p50 {point.p50_ms:.2f} ms, "
            f"p99 {point.p99_ms:.2f} ms, p99.9 {point.p999_ms:.2f} ms"
            + ("" if slow_gc is None else f"; {flushes} flushes, {slow_gc} GC passes >= 10 ms")
            + f"; generator stall {point.generator_stall_ms:.1f} ms"
            + ("" if point.steal_ms is None else f", host steal {point.steal_ms:.0f} ms")
            + (
                ""
                if point.helper_threads_cpu_ms is None
                else f", other server threads {point.helper_threads_cpu_ms:.0f} CPU-ms"
            )
            + ("" if kept_up else "  (did not keep up)")
        )
        return point, run

    @staticmethod
    def _helpers_cpu(server: servers.Server) -> float | None:
        """CPU of a local StreamTally's threads other than its event loop (None otherwise)."""
        if not isinstance(server, servers.StreamTally) or isinstance(server, servers.Remote):
            return None
        if server.workers > 1 or server.proc is None:
            return None
        try:
            return servers.helper_cpu_seconds(server.pid)
        except OSError:
            return None

    def _cores(self) -> list[int] | None:
        """The generator's and the server's cores (None: not pinned, every core)."""
        if self.generator_cpu is None or self.server_cpu is None:
            return None
        return sorted({self.generator_cpu, self.server_cpu} | set(self.server_cpus or ()))

    @staticmethod
    def _inside(server: servers.Server) -> tuple[float, float] | None:
        """(GC passes that took 10 ms or more, flushes) so far, from a StreamTally's own
        metrics; None for a baseline or the children of --workers (no metrics)."""
        if not isinstance(server, servers.StreamTally) or server.workers > 1:
            return None
        try:
            samples = promtext.parse(server.metrics_text())
        except servers.ServerError:
            return None
        return promtext.slow_passes(samples, "streamtally_gc_pause_seconds", "0.01"), (
            promtext.total(samples, "streamtally_flush_seconds_count")
        )

    # -- one target ------------------------------------------------------------------------

    def _measure(
        self,
        name: str,
        server: servers.Server,
        make: Callable[[int], pool.Pool],
        ceiling: float | None,
        on_phase: Callable[[str, str, Any, Sequence[int]], None] | None = None,
        batch: int = 1,
    ) -> TargetResult:
        """Saturation, then the latency curve. ``make(n)`` builds n requests to send once,
        each carrying ``batch`` events (fewer at a session's end)."""
        plan = self.plan
        result = TargetResult(name, LABELS[name], name in SEALED)
        self.results[name] = result
        self.say(f"  {LABELS[name]}")
        if plan.warmup_seconds:
            warm = make(int((ceiling or 20_000) * plan.warmup_seconds))
            run = self._loadgen(server, warm.requests, None, plan.warmup_seconds)
            if on_phase:
                on_phase("warm-up", "loadgen", run, warm.events)
            self.step(f"{name} warm-up")
        size = int((ceiling or 60_000) * plan.saturation_seconds * 1.15) + 1000
        sat_pool = make(size)
        steps_before = self._steps(server)
        procs_before, wall_before = self._process_cpu(server), time.monotonic()
        saturation, raw = self._wrk(server, sat_pool, plan.saturation_seconds)
        procs_after, wall = self._process_cpu(server), time.monotonic() - wall_before
        steps_after = self._steps(server)
        if procs_before is not None and procs_after is not None:
            result.processes = _processes(
                self.workers,
                procs_before,
                procs_after,
                wall,
                saturation.requests,
                _prefix_events(sat_pool.events, saturation.requests),
            )
            p = result.processes
            self.say(
                f"    aggregator process: {p.aggregator_cpu_seconds:.2f} CPU-s (busy "
                f"{p.aggregator_busy:.0%}), {p.aggregator_events_per_cpu_second:,.0f} events "
                f"per CPU-second; {p.workers} collectors: busy "
                f"{', '.join(f'{b:.0%}' for b in p.collector_busy)}, "
                f"{p.collector_reports_per_cpu_second:,.0f} reports per CPU-second"
            )
        if on_phase:
            on_phase("saturation", "wrk" if raw else "loadgen", raw or saturation, sat_pool.events)
        self.step(f"{name} saturation")
        result.saturation = saturation
        result.batches.append(
            BatchRun(batch, _events_per_report(sat_pool.events, saturation.requests), saturation)
        )
        if steps_before is not None and steps_after is not None:
            result.steps_us = _step_delta(steps_before, steps_after)
        self.say(
            f"    saturation ({saturation.tool}, {plan.saturation_seconds:g} s): "
            f"{saturation.rps:,.0f} req/s, {saturation.cpu_seconds_per_1000 * 1000:.1f} "
            f"CPU-ms per 1,000, server busy {saturation.server_busy:.0%}"
        )
        if saturation.non_2xx or saturation.socket_errors:
            result.notes.append(
                f"saturation run had {saturation.non_2xx} non-2xx answers and "
                f"{saturation.socket_errors} socket errors"
            )
        if not saturation.clean:
            result.notes.append(
                f"the server was busy only {saturation.server_busy:.0%} of the saturation run: "
                "either the generator was the limit (expected for nginx) or other processes "
                "took its core (then the numbers are low)"
            )
        if saturation.wrapped:
            result.notes.append("wrk needed more requests than the pool held (wrapped)")
        for fraction in plan.fractions:
            rate = max(1.0, saturation.rps * fraction)
            attempts: list[RatePoint] = []
            for attempt in range(1 + STEAL_RETRIES):
                fixed = make(int(rate * plan.rate_seconds) + 1)
                point, run = self._point(server, fixed.requests, fraction, rate)
                attempts.append(point)
                if on_phase:
                    again = f" (again, {attempt})" if attempt else ""
                    on_phase(f"{fraction:.0%}{again}", "loadgen", run, fixed.events)
                if point.steal_ms is None or point.steal_ms < STEAL_LIMIT_MS:
                    break
                result.notes.append(
                    f"{fraction:.0%} of saturation: the host took {point.steal_ms:.0f} ms of "
                    f"the cores during the run (steal, /proc/stat; p99 {point.p99_ms:.2f} ms)"
                    + (": run again" if attempt < STEAL_RETRIES else "")
                )
            # the attempt the host disturbed least (the last one, if it was not disturbed)
            result.points.append(min(reversed(attempts), key=lambda p: p.steal_ms or 0.0))
            self.step(f"{name} {fraction:.0%}")
        return result

    def _saturation_of(self, name: str, default: float) -> float:
        result = self.results.get(name)
        return result.saturation.rps if result and result.saturation else default

    def _process_cpu(self, server: servers.Server) -> dict[str, Any] | None:
        if not isinstance(server, servers.StreamTally) or server.workers <= 1:
            return None
        return server.process_cpu()

    def _steps(self, server: servers.Server) -> dict[str, tuple[float, float]] | None:
        if not isinstance(server, servers.StreamTally) or server.workers > 1:
            return None  # --workers: the steps run in the children (their metrics are off)
        return promtext.steps(promtext.parse(server.metrics_text()))

    # -- baselines ---------------------------------------------------------------------------

    def _baseline_make(self, base: pool.Pool) -> Callable[[int], pool.Pool]:
        """Stateless servers: the same few thousand requests, reused as often as needed."""

        def make(n: int) -> pool.Pool:
            reps = -(-n // len(base))
            return pool.Pool(requests=(base.requests * reps)[:n], sealed=base.sealed)

        return make

    def run_baseline(self, name: str) -> None:
        cpu = self.server_cpu
        if name == NGINX:
            if servers.nginx_available() is None:
                self.notes.append("nginx is not installed: its baseline was skipped")
                self.say("  nginx is not installed (apt-get install nginx): baseline skipped")
                return
            server: servers.Server = servers.nginx(self.workdir, cpu)
        else:
            server = servers.aiohttp_baseline(self.workdir, cpu, hpke=name == HPKE)
        with server:
            host = f"{server.host}:{server.port}"
            flow = traffic.Traffic(
                traffic.load_templates(),
                concurrent=self.plan.concurrent_sessions,
                seed=self.seed,
                start_ms=self.start_ms,
            )
            key = self._key(server.url) if name == HPKE else None
            base = pool.build(flow, self.plan.baseline_pool, host=host, path="/v1/r/bench", key=key)
            make = self._baseline_make(base)
            self._measure(name, server, make, None)
            if name == NGINX and self.plan.generator_check_rps:
                self.generator_check = self._check_generator(server, make)

    def _check_generator(
        self, server: servers.Server, make: Callable[[int], pool.Pool]
    ) -> dict[str, Any]:
        """What the Python generator itself can do against nginx: closed loop (as fast as
        it can) and open loop at ``generator_check_rps``, with its own CPU use."""
        plan = self.plan
        assert plan.generator_check_rps is not None
        rate = plan.generator_check_rps
        closed = self._loadgen(
            server,
            make(int(rate * 3 * plan.saturation_seconds)).requests,
            None,
            plan.saturation_seconds,
            "generator",
        )
        point, run = self._point(
            server,
            make(int(rate * plan.rate_seconds) + 1).requests,
            rate / self._saturation_of(NGINX, rate),
            rate,
        )
        check = {
            "closed_loop_rps": round(closed.achieved_rate, 1),
            "closed_loop_generator_busy": round(closed.generator_busy, 3),
            "open_loop": asdict(point),
        }
        self.say(
            f"    generator check: closed loop {closed.achieved_rate:,.0f} req/s "
            f"(generator busy {closed.generator_busy:.0%}); open loop at {rate:,.0f}/s: "
            f"{run.achieved_rate:,.0f} achieved, p99 {point.p99_ms:.2f} ms"
        )
        return check

    def _key(self, url: str) -> KeyConfig:
        return parse_ohttp_keys(servers.fetch(url + "/v1/keys"))[0]

    # -- StreamTally ---------------------------------------------------------------------------

    def run_streamtally(self) -> None:
        wanted = [t for t in (ST_PLAIN, ST_SEALED) if t in self.targets]
        server = self.remote or servers.StreamTally(
            self.workdir, self.server_cpu, workers=self.workers, cpus=self.server_cpus
        )
        if self.remote is not None:
            self.say(f"  streamtally at {server.url} (given by URL: not started here)")
            self.notes.append(
                f"StreamTally was given by URL ({server.url}): its CPU time and memory were "
                "not measured (read as 0)"
            )
        elif self.workers > 1:
            where = (
                f"cores {','.join(map(str, sorted(self.server_cpus)))}"
                if self.server_cpus
                else "every core (not pinned: too few cores to keep one for the generator)"
            )
            self.say(
                f"  starting streamtally serve --workers {self.workers} (embedded ClickHouse; "
                f"the aggregator and its collectors on {where}) ..."
            )
            self.notes.append(
                f"serve --workers {self.workers}: the aggregator and its {self.workers} "
                f"collectors ran on {where}; the generator on core {self.generator_cpu}"
            )
        else:
            self.say("  starting streamtally serve (embedded ClickHouse) ...")
        with server:
            load = server.create_account("bench-load", k=2)
            check = server.create_account("bench-correctness", k=2)
            host = f"{server.host}:{server.port}"
            key = self._key(server.url)
            main, *extra = self.batches
            flow = traffic.Traffic(
                traffic.load_templates(),
                concurrent=self.plan.concurrent_sessions,
                seed=self.seed + 1,
                start_ms=self.start_ms,
                batch=main,
            )
            # one flow per further batch size, shared by the targets as `flow` is: a second
            # target continues the sessions (same sid, new sn), never repeats their events
            batched = {
                b: traffic.Traffic(
                    traffic.load_templates(),
                    concurrent=self.plan.concurrent_sessions,
                    seed=self.seed + 10 + b,
                    start_ms=self.start_ms,
                    batch=b,
                )
                for b in extra
            }
            path = f"/v1/r/{load['embed_key']}"
            phases: list[PhaseCount] = []
            counters = [self._counters(server)]

            def on_phase(target: str) -> Callable[[str, str, Any, Sequence[int]], None]:
                def record(phase: str, tool: str, outcome: Any, events: Sequence[int]) -> None:
                    counters.append(self._settled_counters(server))
                    phases.append(
                        _phase_count(
                            f"{target} {phase}", tool, outcome, counters[-2], counters[-1], events
                        )
                    )

                return record

            if self.workers > 1 and not self.plan.warmup_seconds:
                # Each collector child loads its parsers and databases on its first report
                # (~0.4 s each): a second of load first, so that a 1 s saturation run does
                # not measure that. Counted like every phase.
                warm = pool.build(flow, 3000, host=host, path=path)
                run = self._loadgen(server, warm.requests, None, 1.5, "warm-up")
                on_phase("workers")("warm-up", "loadgen", run, warm.events)
            for name in wanted:
                sealed_key = key if name == ST_SEALED else None

                def make(n: int, sealed_key: KeyConfig | None = sealed_key) -> pool.Pool:
                    if sealed_key is not None and n > 5000:
                        self.say(f"    sealing {n:,} reports (fresh HPKE encapsulation each) ...")
                    return pool.build(flow, n, host=host, path=path, key=sealed_key)

                ceiling_of = self.results.get(EXPECTED_CEILING[name])
                ceiling = (
                    ceiling_of.saturation.rps
                    if ceiling_of is not None and ceiling_of.saturation is not None
                    else (40_000.0 if name == ST_PLAIN else 16_000.0)
                )
                self._measure(name, server, make, ceiling, on_phase(name), main)
                for batch in extra:
                    self._batched(
                        name, server, batched[batch], host, path, sealed_key, ceiling,
                        on_phase(name),
                    )  # fmt: skip
                if self.profile:
                    self._profile(server, name, make)
                    counters.append(self._counters(server))  # profiled load is not checked
            self.memory = self._memory(server, host, path)
            self.step("memory")
            counters.append(self._counters(server))
            flushes = counters[-1]["flushes"] - counters[0]["flushes"]
            spent = counters[-1]["flush_seconds"] - counters[0]["flush_seconds"]
            self.flush_stats = {
                "cycles": int(flushes),
                "mean_ms": round(spent / flushes * 1000, 1) if flushes else None,
            }
            self.correctness = self._correctness(server, host, check, phases, counters)
            self.step("correctness")

    def _batched(
        self,
        name: str,
        server: servers.StreamTally,
        flow: traffic.Traffic,
        host: str,
        path: str,
        key: KeyConfig | None,
        ceiling: float,
        on_phase: Callable[[str, str, Any, Sequence[int]], None],
    ) -> None:
        """One more saturation run of ``name`` with ``flow.batch`` events per report (a pool
        as large as for the main run: a sealed request can be sent once only)."""
        result = self.results[name]
        batch = flow.batch
        size = int(ceiling * self.plan.saturation_seconds * 1.15) + 1000
        if key is not None and size > 5000:
            self.say(f"    sealing {size:,} reports of {batch} events ...")
        sat_pool = pool.build(flow, size, host=host, path=path, key=key)
        saturation, raw = self._wrk(server, sat_pool, self.plan.saturation_seconds)
        on_phase(
            f"saturation, {batch} events per report",
            "wrk" if raw else "loadgen",
            raw or saturation,
            sat_pool.events,
        )
        run = BatchRun(batch, _events_per_report(sat_pool.events, saturation.requests), saturation)
        result.batches.append(run)
        self.step(f"{name} batch {batch}")
        self.say(
            f"    {batch} events per report ({run.events_per_report:.2f} measured): "
            f"{saturation.rps:,.0f} reports/s = {run.events_rps:,.0f} events/s, "
            f"{saturation.cpu_seconds_per_1000 * 1000:.1f} CPU-ms per 1,000 reports; viewers "
            "per core "
            + ", ".join(
                f"{run.viewers_per_core(h):,.0f} at a {h} s heartbeat" for h in HEARTBEATS_S
            )
        )

    def _settled_counters(self, server: servers.StreamTally) -> dict[str, float]:
        """The counters once reports still in flight (wrk stops with requests open; a loaded
        machine answers late) are counted: two reads 50 ms apart that agree, at most 3 s.
        Read too early, a phase's late events would be counted in the next phase."""
        previous = self._counters(server)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            time.sleep(0.05)
            current = self._counters(server)
            if current["accepted"] == previous["accepted"] and (
                current["rejected"] == previous["rejected"]
            ):
                return current
            previous = current
        return previous

    def _counters(self, server: servers.StreamTally) -> dict[str, float]:
        samples = promtext.parse(server.metrics_text())
        if server.workers > 1:
            link = promtext.by_label(samples, "streamtally_link_events_total", "outcome")
            # The aggregator's own count: events counted once over the link (resent ones
            # are duplicates, events of an account it refuses are refused). The collectors'
            # counters are in the children, whose metrics listener is off.
            return {
                **self._state_counters(samples),
                "accepted": link.get("counted", 0.0),
                "dropped": link.get("refused", 0.0),
                "rejected": 0.0,
            }
        return {
            **self._state_counters(samples),
            "accepted": promtext.total(samples, "streamtally_events_accepted_total"),
            "dropped": promtext.total(samples, "streamtally_events_dropped_total"),
            "rejected": promtext.total(samples, "streamtally_reports_rejected_total"),
        }

    @staticmethod
    def _state_counters(samples: promtext.Samples) -> dict[str, float]:
        return {
            "active": promtext.total(samples, "streamtally_active_sessions"),
            "flushes": promtext.total(samples, "streamtally_flush_seconds_count"),
            "flush_seconds": promtext.total(samples, "streamtally_flush_seconds_sum"),
        }

    def _memory(self, server: servers.StreamTally, host: str, path: str) -> Memory:
        plan = self.plan
        templates = [t for t in traffic.load_templates() if t[0].player in ("hls.js", "shaka")]
        flow = traffic.Traffic(
            templates[:2],
            concurrent=plan.concurrent_sessions,
            seed=self.seed + 2,
            start_ms=self.start_ms,
            max_events_per_session=plan.memory_events,
            sessions=plan.memory_sessions,
        )
        requests = pool.build(flow, plan.memory_sessions * plan.memory_events, host=host, path=path)
        sat = self.results.get(ST_PLAIN)
        rate = 0.5 * sat.saturation.rps if sat and sat.saturation else 2000.0
        rate = max(rate, 50.0)  # a starved saturation run (a loaded machine) measured ~0
        self.say(
            f"  memory: {plan.memory_sessions:,} new sessions, {plan.memory_events} events each"
        )
        before = self._counters(server)
        rss0 = server.rss_bytes()
        seconds = len(requests) / rate + 30
        run = self._loadgen(server, requests.requests, rate, seconds, "memory")
        time.sleep(0.2)
        rss1 = server.rss_bytes()
        after = self._counters(server)
        # streamtally_active_sessions is coarse (two significant figures, docs/privacy.md):
        # when every report was accepted, the sessions sent are the sessions added.
        all_accepted = run.statuses.get(204, 0) == len(requests)
        grown = plan.memory_sessions if all_accepted else after["active"] - before["active"]
        per = (rss1 - rss0) / grown if grown > 0 else float("nan")
        if run.statuses.get(204, 0) != len(requests):
            self.notes.append(f"memory phase: statuses {dict(run.statuses)}")
        memory = Memory(
            sessions_sent=plan.memory_sessions,
            active_sessions_before=before["active"],
            active_sessions_after=after["active"],
            rss_before=rss0,
            rss_after=rss1,
            bytes_per_session=round(per, 1),
            mb_per_10k_sessions=round(per * 10_000 / 1e6, 2),
        )
        self.say(
            f"    active sessions {before['active']:,.0f} -> {after['active']:,.0f}, "
            f"RSS {rss0 / 1e6:,.1f} -> {rss1 / 1e6:,.1f} MB: {per:,.0f} bytes per session"
        )
        self._memory_run = run
        return memory

    def _correctness(
        self,
        server: servers.StreamTally,
        host: str,
        account: dict[str, Any],
        phases: list[PhaseCount],
        counters: list[dict[str, float]],
    ) -> Correctness:
        plan = self.plan
        # The memory phase was driven by loadgen: exact too.
        memory_run = self._memory_run
        assert memory_run is not None
        phases.append(
            _phase_count("memory", "loadgen", memory_run, counters[-2], counters[-1], None)
        )
        now = datetime.now(UTC)
        hour_end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        if (hour_end - now).total_seconds() < 20:  # keep the check inside one hour cell
            time.sleep((hour_end - now).total_seconds() + 1)
        requests, views = traffic.complete_sessions(
            traffic.load_templates(),
            plan.correctness_sessions,
            seed=self.seed + 3,
            start_ms=self.start_ms,
            batch=self.batches[0],
        )
        self.say(
            f"  correctness: {plan.correctness_sessions} whole sessions "
            f"({sum(r.events for r in requests):,} events in {len(requests):,} reports, "
            f"{views} views), half sealed, to a second account"
        )
        path = f"/v1/r/{account['embed_key']}"
        key = self._key(server.url)
        built: list[bytes] = []
        for i, r in enumerate(requests):
            sealed = i % 2 == 1
            body = r.body
            if sealed:
                body = pool.seal_all([body], key, workers=1)[0]
            built.append(
                pool.http_request(
                    r,
                    host=host,
                    path=path,
                    body=body,
                    content_type=pool.SEALED_TYPE if sealed else pool.PLAIN_TYPE,
                )
            )
        before = self._counters(server)
        run = self._loadgen(server, built, 2000.0, len(built) / 2000.0 + 30, "correctness")
        after = self._settled_counters(server)
        phases.append(
            _phase_count("correctness", "loadgen", run, before, after, [r.events for r in requests])
        )
        flushed = server.flush()
        start = datetime.fromtimestamp(self.start_ms / 1000, UTC) - timedelta(hours=1)
        end = datetime.now(UTC) + timedelta(hours=1)
        query = urllib.parse.urlencode(
            {
                "granularity": "hour",
                "from": start.strftime("%Y-%m-%dT%H:00:00Z"),
                "to": end.strftime("%Y-%m-%dT%H:00:00Z"),
            }
        )
        status, raw = server.request("GET", f"/v1/stats?{query}", token=account["api_token"])
        stored = 0
        if status == 200:
            stored = sum(int(row["views"]) for row in orjson.loads(raw)["rows"])
        exact = [p for p in phases if p.tool == "loadgen"]
        sent = sum(p.events_sent for p in exact)
        counted = sum(p.events_counted for p in exact)
        complete = run.statuses.get(204, 0) == len(built) and run.errors == 0
        ok = all(p.ok for p in phases) and sent == counted and stored == views and complete
        detail = (
            f"events: {sent:,} sent (answered 204 to the open-loop generator) vs {counted:,} "
            f"counted; wrk phases within bounds: {all(p.ok for p in phases if p.tool == 'wrk')}; "
            f"views: {views} expected vs {stored} stored (stats API HTTP {status}, flush "
            f"wrote {flushed.get('rows')} rows)"
        )
        self.say(("  correct: " if ok else "  NOT CORRECT: ") + detail)
        return Correctness(
            phases=phases,
            events_sent=sent,
            events_counted=counted,
            sessions=plan.correctness_sessions,
            views_expected=views,
            views_stored=stored,
            ok=ok,
            detail=detail,
        )

    def _profile(
        self, server: servers.StreamTally, name: str, make: Callable[[int], pool.Pool]
    ) -> None:
        from benchmarks import profiling

        result = self.results[name]
        assert result.saturation is not None
        rate = 0.8 * result.saturation.rps
        seconds = max(5.0, self.plan.rate_seconds)
        batch = make(int(rate * seconds) + 1)
        self.say(f"    profiling with py-spy at {rate:,.0f} req/s for {seconds:g} s ...")
        out = self.artifacts / f"profile-{name}"
        with profiling.record(server.pid, out, seconds + 1) as recording:
            self._loadgen(server, batch.requests, rate, seconds, "profile")
        summary = recording.summary()
        if self.profile_summary is None:
            self.profile_summary = {}
        self.profile_summary[name] = summary

    # -- all -------------------------------------------------------------------------------

    def total_steps(self) -> int:
        """How many times :attr:`step` is called by :meth:`run` (for a progress bar)."""
        per_target = (1 if self.plan.warmup_seconds else 0) + 1 + len(self.plan.fractions)
        baselines = [t for t in (NGINX, AIOHTTP, HPKE) if t in self.targets]
        if NGINX in baselines and servers.nginx_available() is None:
            baselines.remove(NGINX)
        ours = [t for t in (ST_PLAIN, ST_SEALED) if t in self.targets]
        extra = len(self.batches) - 1
        return per_target * (len(baselines) + len(ours)) + extra * len(ours) + (2 if ours else 0)

    def run(self) -> dict[str, Any]:
        started = datetime.now(UTC)
        info = machine_info()
        if self.generator_cpu is None:
            self.notes.append("fewer than 2 cores: server and generator share the CPU")
        where = f"server on core {self.server_cpu}"
        if self.workers > 1:
            where = f"baselines on core {self.server_cpu}, serve --workers {self.workers} on " + (
                f"cores {','.join(map(str, sorted(self.server_cpus)))}"
                if self.server_cpus
                else "every core"
            )
        self.say(
            f"streamtally benchmark ({self.plan.name}): {where}, "
            f"generators on core {self.generator_cpu}; load average {info['load_average']}"
        )
        for name in (NGINX, AIOHTTP, HPKE):
            if name in self.targets:
                self.run_baseline(name)
        if ST_PLAIN in self.targets or ST_SEALED in self.targets:
            self.run_streamtally()
        info["load_average_end"] = os.getloadavg()
        return self.summary(started, info)

    def summary(self, started: datetime, info: dict[str, Any]) -> dict[str, Any]:
        targets: dict[str, Any] = {}
        for name, r in self.results.items():
            targets[name] = asdict(r)
            if r.saturation is not None:
                targets[name]["saturation"]["cpu_capacity_rps"] = round(
                    r.saturation.cpu_capacity_rps, 1
                )
                targets[name]["saturation"]["clean"] = r.saturation.clean
            targets[name]["batches"] = [b.summary() for b in r.batches]
        return {
            "plan": asdict(self.plan),
            "started": started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "machine": info,
            "server_cpu": self.server_cpu,
            "generator_cpu": self.generator_cpu,
            "batches": list(self.batches),
            "heartbeats_s": list(HEARTBEATS_S),
            "workers": self.workers,
            "server_cpus": sorted(self.server_cpus) if self.server_cpus is not None else None,
            "targets": targets,
            "memory": asdict(self.memory) if self.memory else None,
            "correctness": asdict(self.correctness) if self.correctness else None,
            "profile": self.profile_summary,
            "generator_check": self.generator_check,
            "flush": self.flush_stats,
            "goals": goals(self.results, self.memory),
            "notes": self.notes + [f"{n}: {x}" for n, r in self.results.items() for x in r.notes],
        }


def _step_delta(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Microseconds per report spent in each pipeline step between two scrapes."""
    out: dict[str, float] = {}
    reports = after.get("receive", (0.0, 0.0))[0] - before.get("receive", (0.0, 0.0))[0]
    for step, (count, total) in after.items():
        spent = total - before.get(step, (0.0, 0.0))[1]
        if reports > 0:
            out[step] = round(spent / reports * 1e6, 2)
        del count
    return out


def _prefix_events(events: Sequence[int] | None, n: int) -> int:
    """Events in the first ``n`` requests handed out from a pool (cycling, as wrk does)."""
    if events is None or not events:
        return n  # one event per request
    cycles, rest = divmod(n, len(events))
    return cycles * sum(events) + sum(events[:rest])


def _events_per_report(events: Sequence[int], requests: int) -> float:
    return _prefix_events(events, requests) / requests if requests > 0 else float("nan")


def _processes(
    workers: int,
    before: dict[str, Any],
    after: dict[str, Any],
    wall: float,
    reports: int,
    events: int,
) -> Processes:
    """What each process of ``serve --workers`` spent between two readings."""
    aggregator = after["aggregator"] - before["aggregator"]
    collectors = [
        cpu - before["collectors"].get(pid, 0.0) for pid, cpu in after["collectors"].items()
    ]
    spent = sum(collectors)
    return Processes(
        workers=workers,
        aggregator_cpu_seconds=round(aggregator, 3),
        aggregator_busy=round(aggregator / wall, 3) if wall > 0 else 0.0,
        aggregator_events_per_cpu_second=round(events / aggregator, 1) if aggregator else 0.0,
        collector_cpu_seconds=[round(c, 3) for c in collectors],
        collector_busy=[round(c / wall, 3) if wall > 0 else 0.0 for c in collectors],
        collector_reports_per_cpu_second=round(reports / spent, 1) if spent else 0.0,
    )


def _phase_count(
    phase: str,
    tool: str,
    outcome: Any,
    before: dict[str, float],
    after: dict[str, float],
    events: Sequence[int] | None,
) -> PhaseCount:
    """Events sent in a phase against events the service counted. The generators hand out
    a pool's requests in order; ``events`` holds the event lines of each (None: one each)."""
    counted = int(after["accepted"] - before["accepted"])
    dropped = int(after["dropped"] - before["dropped"])
    rejected = int(after["rejected"] - before["rejected"])
    if isinstance(outcome, loadgen.RunResult):
        answered = outcome.statuses.get(204, 0)
        # every request sent was answered 204: exactly the first `sent` of the pool
        sent = _prefix_events(events, outcome.sent if answered == outcome.sent else answered)
        ok = counted == sent and dropped == 0 and outcome.errors == 0 and answered == outcome.sent
        return PhaseCount(phase, tool, answered, sent, sent, counted, dropped, rejected, ok)
    if isinstance(outcome, wrk.WrkResult):
        completed = outcome.requests - outcome.non_2xx
        upper = _prefix_events(events, outcome.generated)
        # requests still open when wrk stopped are among the last handed out
        most = max(events) if events else 1
        lower = max(0, upper - (outcome.generated - completed) * most)
        ok = lower <= counted <= upper and dropped == 0 and outcome.non_2xx == 0
        return PhaseCount(phase, tool, completed, lower, upper, counted, dropped, rejected, ok)
    assert isinstance(outcome, Saturation)
    sent = _prefix_events(events, outcome.requests)
    ok = counted == sent and dropped == 0 and outcome.non_2xx == 0
    return PhaseCount(
        phase, "loadgen", outcome.requests, sent, sent, counted, dropped, rejected, ok
    )


def goals(results: dict[str, TargetResult], memory: Memory | None) -> list[dict[str, Any]]:
    """The issue's targets, measured: each with its number, the goal and whether it is met."""

    def sat(name: str) -> float | None:
        r = results.get(name)
        return r.saturation.rps if r and r.saturation else None

    def per_cpu(name: str) -> float | None:
        r = results.get(name)
        return r.saturation.cpu_capacity_rps if r and r.saturation else None

    out: list[dict[str, Any]] = []
    for ours, base, what, need in (
        (ST_SEALED, HPKE, "sealed reports/s vs aiohttp+HPKE", 0.8),
        (ST_PLAIN, AIOHTTP, "plain reports/s vs bare aiohttp", 0.5),
    ):
        a, b = sat(ours), sat(base)
        if a and b:
            out.append(_goal(what + " (wrk)", a / b, f">= {need:.0%}", a / b >= need))
        a, b = per_cpu(ours), per_cpu(base)
        if a and b:
            out.append(_goal(what + " (per CPU-second)", a / b, f">= {need:.0%}", a / b >= need))
    for name in (ST_PLAIN, ST_SEALED):
        r = results.get(name)
        p = r.point(0.8) if r else None
        if p is not None:
            out.append(
                _goal(f"{name} p99 at 80% of saturation (ms)", p.p99_ms, "<= 10 ms",
                      p.p99_ms <= 10.0)
            )  # fmt: skip
    if memory is not None:
        kb = memory.bytes_per_session / 1000
        out.append(_goal("memory per active session (KB)", kb, "<= 2 KB", kb <= 2.0))
    return out


def _goal(what: str, value: float, target: str, met: bool) -> dict[str, Any]:
    return {"what": what, "value": round(value, 3), "target": target, "met": met}
