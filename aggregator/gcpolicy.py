"""The cyclic garbage collector, kept off the request path.

A running aggregator holds a few GC-tracked objects per playback (its session, leaves, the
small lists of what each viewer added): about 4 per session, 180,000 at 45,000 sessions. A
full (generation 2) collection walks every one of them while the event loop waits: about
7 ms per 5,000 sessions on the benchmark VM, so 60 ms and more at that size, and
CPython runs one whenever a quarter more objects have survived into generation 2 since the
last (every minute or two under steady churn). That pause was the p99 of a loaded
collector (docs/performance.md).

None of that state needs the cyclic collector: it forms no reference cycles, so reference
counting frees a session, a leaf or a window the moment it is dropped (asserted by
tests/aggregator/test_gcpolicy.py). So the policy, installed by the commands that serve
(``serve``, ``aggregate``, ``collect``), never in tests or as a library:

- **settle** at start-up: collect once, then freeze what is loaded (modules, clients,
  parsers): it lives as long as the process.
- **retire** every :data:`RETIRE_SECONDS`: collect the young generations (0 and 1: a few
  thousand objects, the pass Python makes every few hundred allocations anyway), then
  freeze (constant time, a list splice). Whatever lived that long moves to the permanent
  generation and out of every later scan, and a full collection walks only what arrived
  since the last retire. The young pass first keeps garbage out of what is frozen: a
  flush leaves ~200 objects in cycles (futures of the ClickHouse thread), which a bare
  freeze would keep until the sweep.
- **sweep** every :data:`SWEEP_SECONDS`: unfreeze, collect everything, freeze. A cycle
  that was alive when retired and became garbage later (a keep-alive connection open
  across a retire) is found here: memory such garbage holds is bounded by one sweep
  interval's worth, for one pause an hour instead of one a minute or two.

Every pass is timed into ``streamtally_gc_pause_seconds{generation}``, which is how the
benchmark tells a GC pause from a slow request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Final

from prometheus_client import Histogram

__all__ = [
    "GC_PAUSE_SECONDS",
    "RETIRE_SECONDS",
    "SWEEP_SECONDS",
    "retire_forever",
    "settle",
    "sweep",
]

log = logging.getLogger("streamtally.gc")

RETIRE_SECONDS: Final = 10.0
SWEEP_SECONDS: Final = 3600.0

GC_PAUSE_SECONDS = Histogram(
    "streamtally_gc_pause_seconds",
    "Time the cyclic garbage collector held the process, by generation",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
_GENERATIONS: Final = tuple(GC_PAUSE_SECONDS.labels(generation=str(g)) for g in range(3))


class _Timer:
    """A ``gc.callbacks`` entry observing each pass's length."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            _GENERATIONS[info["generation"]].observe(time.perf_counter() - self.started)


def _install_timer() -> None:
    if not any(isinstance(cb, _Timer) for cb in gc.callbacks):
        gc.callbacks.append(_Timer())


def settle() -> None:
    """At start-up, once everything long-lived is loaded: collect, then freeze it."""
    _install_timer()
    gc.collect()
    gc.freeze()


def retire() -> None:
    """Collect the young generations, then freeze what is left alive."""
    gc.collect(1)
    gc.freeze()


def sweep() -> int:
    """Collect everything, the retired heap included, then retire what is left; returns
    how many unreachable objects were found."""
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    return found


def start() -> asyncio.Task[None]:
    """What a serving command does once everything long-lived is loaded: settle, then run
    :func:`retire_forever` (the task to cancel when it stops serving)."""
    settle()
    return asyncio.create_task(retire_forever())


async def retire_forever(
    retire_seconds: float = RETIRE_SECONDS, sweep_seconds: float = SWEEP_SECONDS
) -> None:
    """The policy for as long as the process serves (a task, cancelled on exit, leaving
    the collector as it is: a hot restart's successor settles its own)."""
    swept = time.monotonic()
    while True:
        await asyncio.sleep(retire_seconds)
        if time.monotonic() - swept >= sweep_seconds:
            started = time.monotonic()
            found = sweep()
            swept = time.monotonic()
            log.info(
                "gc sweep: %d unreachable object(s) found in %.0f ms",
                found,
                1e3 * (swept - started),
            )
        else:
            retire()
