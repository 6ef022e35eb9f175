"""Closed-loop maximum throughput with wrk, over the same pre-built requests.

wrk keeps every connection busy (send, wait, send): its request rate at saturation is the
server's capacity; its latencies suffer from coordinated omission and are not used. A Lua
script hands wrk the pre-built requests in order, one each; if wrk needs more than the pool
holds it wraps around, and the run says so (for sealed bodies a repeat is refused with 422,
for plain ones it is a duplicate: either way the run is not clean).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """\
local data_path = {data!r}
local index_path = {index!r}
local reqs = {{}}
n = 0
i = 0
wraps = 0

function init(args)
  local f = assert(io.open(data_path, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  for line in io.lines(index_path) do
    local len = tonumber(line)
    n = n + 1
    reqs[n] = data:sub(pos, pos + len - 1)
    pos = pos + len
  end
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wraps = wraps + 1
  end
  return reqs[i]
end

local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local generated, wrapped = 0, 0
  for _, t in ipairs(threads) do
    generated = generated + t:get("i") + t:get("n") * t:get("wraps")
    wrapped = wrapped + t:get("wraps")
  end
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_us=%d status=%d connect=%d read=%d write=%d timeout=%d "
    .. "generated=%d wraps=%d\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    generated, wrapped))
end
"""

_RESULT = re.compile(r"WRKRESULT (.*)")


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # completed
    duration: float  # seconds
    non_2xx: int
    socket_errors: int
    generated: int  # requests the script handed out (some may not have completed)
    wrapped: bool

    @property
    def rate(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0


def available() -> str | None:
    return shutil.which("wrk")


def run(
    url: str,
    data: Path,
    index: Path,
    *,
    duration: float,
    connections: int,
    cpu: int | None,
    workdir: Path,
) -> WrkResult:
    """Run wrk with one thread (pinned to ``cpu``) against ``url`` for ``duration`` s."""
    binary = available()
    if binary is None:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    script = workdir / "pool.lua"
    script.write_text(SCRIPT.format(data=str(data), index=str(index)))
    seconds = max(1, round(duration))
    command = [
        binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(script), url,
    ]  # fmt: skip

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        preexec_fn=pin,
        check=False,
    )
    match = _RESULT.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        raise WrkError(f"wrk failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")
    values = dict(part.split("=") for part in match.group(1).split())
    numbers = {k: int(v) for k, v in values.items()}
    return WrkResult(
        requests=numbers["requests"],
        duration=numbers["duration_us"] / 1e6,
        non_2xx=numbers["status"],
        socket_errors=numbers["connect"] + numbers["read"] + numbers["write"] + numbers["timeout"],
        generated=numbers["generated"],
        wrapped=numbers["wraps"] > 0,
    )
