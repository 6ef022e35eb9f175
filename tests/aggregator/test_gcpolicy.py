"""The cyclic GC policy (aggregator/gcpolicy.py) and what it rests on.

The policy retires whatever lived ten seconds to the permanent generation, where the
cyclic collector no longer looks. That is only safe if the state a server keeps is freed
by reference counting alone: a cycle in it would be garbage the collector never finds
(until the hourly sweep). So the first test builds that state the way a server does
(sessions through their lives, minutes closed, released by the ledger in both privacy
modes, flushed), drops it with the collector off, and asserts nothing is left for it.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.counting.sessions import Leaf, Session
from aggregator.counting.windows import Aggregator
from aggregator.release.ledger import Ledger
from aggregator.release.noise import DpPolicy
from tests.aggregator.counting.test_sessions import T0, Player
from tests.integration.serveproc import ServeProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _live(kind: type) -> int:
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def _a_server_hour(agg: Aggregator, ledger: Ledger) -> None:
    """120 playbacks over 20 minutes (some failing, some seeking, some still going), every
    minute closed and released as the flush does, open hours and days settled."""
    for n in range(120):
        p = Player(agg, session=n, viewer=n % 40, stream=f"s{n % 3}")
        start = (n % 20) * 60.0
        p(start, sta="s")
        p(start + 1.0, sta="p", bitrate_kbps=1500 + n)
        p(start + 11.0, "t", sta="p", bitrate_kbps=3000)
        if n % 7 == 0:
            p(start + 12.0, sta="f", error_code="E1")
        elif n % 5 == 0:
            p(start + 13.0, sta="k")
            p(start + 14.0, sta="r")
            p(start + 15.0, sta="p")
        elif n % 2:
            p(start + 30.0, sta="e")
        if n % 10 == 0:
            agg.tick(T0 + start + 61.0)
            for raw in agg.take_closed():
                ledger.add_minute(raw)
            ledger.written(ledger.groups(changed_only=True, settle_open=True))
    agg.end_all(T0 + 7200.0)
    for raw in agg.take_closed():
        ledger.add_minute(raw)
    ledger.written(ledger.groups(changed_only=False, settle_open=True))


@pytest.mark.parametrize("dp", [False, True], ids=["k-anonymity", "differential-privacy"])
def test_a_servers_state_is_freed_by_reference_counting_alone(
    collector_off: None, dp: bool
) -> None:
    policy = DpPolicy()
    agg = Aggregator(idle_seconds=600)
    ledger = Ledger(lambda _account: 2, (lambda _a, _d: policy) if dp else None)
    _a_server_hour(agg, ledger)
    agg2 = Aggregator(idle_seconds=600)  # a second run, still holding sessions and leaves
    for n in range(50):
        Player(agg2, session=n, viewer=n)(float(n), sta="s")
    assert _live(Session) == 50
    assert _live(Leaf) > 0
    del agg, ledger, agg2
    assert (_live(Session), _live(Leaf)) == (0, 0)  # freed the moment they were dropped
    assert gc.collect() == 0  # and nothing left that only the cyclic collector would find


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_retired_objects_leave_the_scans_and_the_sweep_finds_their_cycles() -> None:
    out = _python(
        """
        import gc
        from aggregator import gcpolicy

        gcpolicy.settle()
        class Node:
            pass
        nodes = [Node() for _ in range(1000)]
        for a, b in zip(nodes, nodes[1:] + nodes[:1]):
            a.next = b  # one ring of 1,000: a cycle
        gc.freeze()  # a retire
        tracked = len(gc.get_objects())
        del nodes, a, b
        found_by_a_full_pass = gc.collect()
        found_by_the_sweep = gcpolicy.sweep()
        print(tracked, found_by_a_full_pass, found_by_the_sweep, gc.get_freeze_count() > 0)
        """
    )
    tracked, full, swept, frozen = out.split()
    assert int(tracked) < 1000  # the ring was out of the scans once retired
    assert int(full) == 0  # so a full pass does not see it die ...
    assert int(swept) >= 1000  # ... and the hourly sweep does
    assert frozen == "True"  # what survives the sweep is retired again


def test_every_pass_is_timed_by_generation() -> None:
    out = _python(
        """
        import gc
        from aggregator import gcpolicy
        from prometheus_client import REGISTRY

        gcpolicy.settle()
        gcpolicy.settle()  # twice: still one timer
        gc.collect(0)
        gc.collect(1)
        def count(g):
            return REGISTRY.get_sample_value(
                "streamtally_gc_pause_seconds_count", {"generation": str(g)}
            )
        print(count(0), count(1), count(2))
        """
    )
    assert [float(x) for x in out.split()] == [1.0, 1.0, 2.0]  # settle's pass each time


def test_serve_runs_the_policy(tmp_path: Path) -> None:
    proc = ServeProcess(tmp_path)
    proc.start()
    try:
        text = proc.metrics().decode()
    finally:
        proc.stop()
    line = next(
        s for s in text.splitlines()
        if s.startswith('streamtally_gc_pause_seconds_count{generation="2"}')
    )  # fmt: skip
    assert float(line.split()[-1]) >= 1  # the start-up settle, timed


def test_a_retire_freezes_no_young_garbage() -> None:
    """Garbage still in the young generations when a retire comes (a flush leaves some) is
    collected, not frozen until the sweep."""
    out = _python(
        """
        import gc
        from aggregator import gcpolicy

        gcpolicy.settle()
        class Node:
            pass
        for _ in range(200):
            a, b = Node(), Node()
            a.other, b.other = b, a  # a pair in a cycle, dropped at once
        del a, b
        gcpolicy.retire()
        print(gcpolicy.sweep())
        """
    )
    assert int(out) < 10  # the pairs (400 objects) were not frozen


def test_the_serving_loop_retires_and_sweeps() -> None:
    """retire_forever, with short intervals: what lives is retired between its turns, and
    the sweep finds a cycle that died after it was retired, and says so in the log."""
    out = _python(
        """
        import asyncio, gc, logging, sys
        from aggregator import gcpolicy

        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")

        class Node:
            pass

        async def main():
            gcpolicy.settle()
            task = asyncio.create_task(gcpolicy.retire_forever(0.02, 0.3))
            ring = [Node() for _ in range(500)]
            for a, b in zip(ring, ring[1:] + ring[:1]):
                a.next = b
            del a, b
            before = gc.get_freeze_count()
            await asyncio.sleep(0.1)  # retires: the ring is frozen now
            print("retired", gc.get_freeze_count() - before >= 500)
            del ring  # dies in the permanent generation
            await asyncio.sleep(0.4)  # the sweep comes
            task.cancel()

        asyncio.run(main())
        """
    )
    lines = out.splitlines()
    assert "retired True" in lines
    sweeps = [line for line in lines if line.startswith("gc sweep: ")]
    assert sweeps
    assert int(sweeps[0].split()[2]) >= 500
