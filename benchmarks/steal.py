"""Time the hypervisor took from this VM's cores (``steal`` in /proc/stat).

A cloud VM's vCPU can be paused by its host (CPU quota, a noisy neighbour): the guest sees
wall time pass with no CPU time and no context switch. On the machine these numbers come
from, that shows as stalls of ~30 ms every 100 ms once a phase has run both cores busy for
a while: a stall of the generator or the server is measured as request latency. The
runner reads steal around each fixed-rate run and runs a point again when the host took
time during it, so a p99 is the server's, not the host's."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TICK = 1.0 / os.sysconf("SC_CLK_TCK")


def seconds(cpus: Iterable[int] | None = None, stat: Path = Path("/proc/stat")) -> float | None:
    """Steal time so far, summed over ``cpus`` (every core if None); None where the kernel
    does not report it."""
    wanted = None if cpus is None else {f"cpu{c}" for c in cpus}
    total = 0
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    found = False
    for line in lines:
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu":
            continue
        if (wanted is None or fields[0] in wanted) and len(fields) > 8:
            total += int(fields[8])
            found = True
    return total * _TICK if found else None
