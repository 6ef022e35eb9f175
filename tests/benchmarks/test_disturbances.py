"""What the benchmark tells apart from the server's own latency: the host taking the
cores (steal, benchmarks/steal.py) and the generator's own loop stalling (loadgen)."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from pathlib import Path

import pytest
import uvloop

from benchmarks import loadgen, pool, runner, servers, steal

STAT = """cpu  100 0 50 900 0 0 0 30 0 0
cpu0 50 0 25 450 0 0 0 10 0 0
cpu1 50 0 25 450 0 0 0 20 0 0
intr 12345
"""


@pytest.mark.parametrize(
    ("cpus", "ticks"),
    [(None, 30), ([0], 10), ([1], 20), ([0, 1], 30), ([7], None)],
    ids=["every-core", "core-0", "core-1", "both", "absent-core"],
)
def test_steal_is_read_per_core(tmp_path: Path, cpus: list[int] | None, ticks: int | None) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    got = steal.seconds(cpus, stat)
    assert got == (None if ticks is None else pytest.approx(ticks * steal._TICK))


def test_a_kernel_without_steal_or_proc_gives_none(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.write_text("cpu  1 2 3 4\ncpu0 1 2 3 4\n")
    assert steal.seconds(None, old) is None
    assert steal.seconds(None, tmp_path / "missing") is None


def test_this_machine_reports_steal() -> None:
    assert steal.seconds() is not None  # Linux >= 2.6.11: the column the runner relies on


async def _answer_204(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (await reader.readuntil(b"\r\n\r\n")) is not None:
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")


def test_a_stall_of_the_generator_is_measured_as_its_own() -> None:
    """A generator that cannot run for 80 ms sends late: its requests' latency counts from
    when they were due (no coordinated omission), so the run must say it stalled."""

    async def main() -> loadgen.RunResult:
        server = await asyncio.start_server(_answer_204, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        loop.call_later(0.3, time.sleep, 0.08)  # the generator's loop held, as a GC pass would
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        async with server:
            return await loadgen.run(
                "127.0.0.1", port, [request] * 400, rate=400.0, duration=0.8, connections=4
            )

    result = uvloop.run(main())
    assert result.answered == 320
    assert result.generator_stall >= 0.08
    assert max(result.latencies) >= 0.07  # and what it did to the requests due meanwhile


def _run(p99_ms: float) -> loadgen.RunResult:
    return loadgen.RunResult(
        offered_rate=500.0, duration=1.0, sent=500, answered=500, statuses=Counter({204: 500}),
        latencies=array("d", [p99_ms / 1e3] * 10), errors=0, generator_cpu=1.0,
    )  # fmt: skip


class _Server:
    """Neither a baseline nor StreamTally: the runner measures it without metrics."""

    name = "fake"

    def cpu_seconds(self) -> float:
        return 0.0


def test_a_point_the_host_disturbed_is_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steal during the 80 % run: run again (each attempt's requests still accounted for by
    the correctness check), keep the undisturbed one, and say so in the notes. Steal of a
    tick or two (10-20 ms, common) is not a disturbance."""
    stolen = iter([0.0, 0.02, 0.02, 1.02, 1.22, 1.22])  # before and after each run
    monkeypatch.setattr(steal, "seconds", lambda cpus=None: next(stolen))
    monkeypatch.setattr(servers, "cores", lambda: [0, 1])
    r = runner.Bench(runner.QUICK, tmp_path, targets=[runner.AIOHTTP], progress=lambda s: None)
    sat = runner.Saturation("loadgen", 1000.0, 1000, 0, 0, 1.0, 1.0, 1.0, False)
    monkeypatch.setattr(r, "_wrk", lambda *a: (sat, None))
    p99 = iter([1.0, 99.0, 2.0])

    monkeypatch.setattr(r, "_loadgen", lambda *a, **k: _run(next(p99)))
    phases: list[str] = []
    result = r._measure(
        runner.AIOHTTP,
        _Server(),  # type: ignore[arg-type]
        lambda n: pool.Pool(requests=[b"x"] * n, events=[1] * n),
        1000.0,
        on_phase=lambda label, tool, run, events: phases.append(label),
    )
    assert phases == ["saturation", "50%", "80%", "80% (again, 1)"]
    assert [(p.fraction, p.p99_ms, p.steal_ms) for p in result.points] == [
        (0.5, 1.0, 20.0),
        (0.8, 2.0, 0.0),
    ]
    assert any("80% of saturation: the host took 1000 ms" in n for n in result.notes)


def test_out_of_retries_the_least_disturbed_attempt_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stolen = iter([0.0, 0.0, 0.0, 0.3, 0.3, 0.4, 0.4, 0.9])  # 80 %: 300, 100, 500 ms
    monkeypatch.setattr(steal, "seconds", lambda cpus=None: next(stolen))
    monkeypatch.setattr(servers, "cores", lambda: [0, 1])
    r = runner.Bench(runner.QUICK, tmp_path, targets=[runner.AIOHTTP], progress=lambda s: None)
    sat = runner.Saturation("loadgen", 1000.0, 1000, 0, 0, 1.0, 1.0, 1.0, False)
    monkeypatch.setattr(r, "_wrk", lambda *a: (sat, None))
    p99 = iter([1.0, 50.0, 3.0, 70.0])
    monkeypatch.setattr(r, "_loadgen", lambda *a, **k: _run(next(p99)))
    result = r._measure(
        runner.AIOHTTP,
        _Server(),  # type: ignore[arg-type]
        lambda n: pool.Pool(requests=[b"x"] * n, events=[1] * n),
        1000.0,
    )
    assert [(p.p99_ms, p.steal_ms) for p in result.points] == [(1.0, 0.0), (3.0, 100.0)]


def test_the_cpu_of_a_servers_other_threads_is_told_from_its_loops() -> None:
    """What long-lived helper threads (chDB's) spend on the event loop's pinned core shows
    apart from the main thread's CPU."""
    import os
    import threading

    busy, done = threading.Event(), threading.Event()

    def burn() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass
        busy.set()
        done.wait(10)  # alive while measured: an ended thread leaves /proc/<pid>/task

    before = servers.helper_cpu_seconds(os.getpid())
    worker = threading.Thread(target=burn)
    worker.start()
    try:
        assert busy.wait(10)
        after = servers.helper_cpu_seconds(os.getpid())
    finally:
        done.set()
        worker.join()
    assert after - before >= 0.15  # the thread's 0.2 s of CPU, in clock ticks
    assert after - before < 0.5  # and not the main thread's (it only waited)
