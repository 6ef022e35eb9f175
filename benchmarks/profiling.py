"""Sample a running server with py-spy and say where its time goes.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``). The
summary has the share of samples in which each function is on the stack (inclusive) and at
the top of it (self), for the top functions, the pipeline steps and the main layers.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")

#: Layers by file: a sample belongs to the innermost frame that matches one of them.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HPKE open", ("collector/sealed.py",)),
    ("CMCD parse", ("collector/cmcd.py",)),
    ("client IP + geo (ipaddress)", ("collector/clientip.py", "collector/geo.py", "ipaddress.py")),
    ("UA classes", ("collector/useragent.py",)),
    ("strip (other)", ("collector/strip.py",)),
    ("viewer/session keys", ("collector/viewer.py",)),
    ("rate limit", ("collector/ratelimit.py",)),
    ("replay guard", ("collector/replay.py",)),
    ("dedupe", ("collector/dedupe.py",)),
    ("step metrics", ("collector/metrics.py",)),
    (
        "aggregator",
        (
            "aggregator/counting/windows.py",
            "aggregator/counting/sessions.py",
            "aggregator/service.py",
            "aggregator/counting/cells.py",
            "aggregator/release/kanon.py",
            "aggregator/counting/histogram.py",
            "aggregator/storage/writer.py",
        ),
    ),
    ("ClickHouse (store, chDB)", ("aggregator/storage/store.py", "clickhouse_connect/", "chdb/")),
    ("prometheus /metrics", ("prometheus_client/",)),
    ("pipeline (own code)", ("collector/pipeline.py",)),
    ("report handler + CORS + access log", ("collector/app.py",)),
    ("aiohttp (HTTP parse, request, response)", ("aiohttp/", "multidict/", "yarl/")),
)
OTHER = "event loop + other"


class Recording:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def summary(self, top: int = 25) -> dict[str, Any]:
        if self.error is not None or not self.out.exists():
            return {"error": self.error or "py-spy wrote nothing"}
        return summarise(self.out.read_text(), top)


@contextlib.contextmanager
def record(pid: int, out: Path, seconds: float, rate: int = 200) -> Iterator[Recording]:
    """py-spy records ``pid`` while the block runs (at most ``seconds``)."""
    recording = Recording(out.with_suffix(".collapsed.txt"))
    binary = shutil.which("py-spy")
    if binary is None:
        recording.error = "py-spy is not installed (pip install py-spy)"
        yield recording
        return
    command = [
        binary, "record", "--pid", str(pid), "--duration", str(int(seconds + 0.999)),
        "--rate", str(rate), "--format", "raw", "--output", str(recording.out), "--nonblocking",
    ]  # fmt: skip
    recording.proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield recording
    finally:
        try:
            _, err = recording.proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            recording.proc.kill()
            _, err = recording.proc.communicate()
        if recording.proc.returncode != 0:
            recording.error = err.decode(errors="replace")[-500:]


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    if "site-packages/" in path:  # keep the package: aiohttp/web_protocol.py
        short = path.split("site-packages/", 1)[1]
    return f"{short}:{match.group('func')}"


def _layer(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for layer, patterns in LAYERS:
            if any(p in frame for p in patterns):
                return layer
    return OTHER


def summarise(text: str, top: int = 25) -> dict[str, Any]:
    """Shares of samples per function (inclusive, self) and per layer."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        for name in set(frames):
            inclusive[name] += count
        own[frames[-1]] += count
        layers[_layer(frames)] += count

    def share(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, round(100.0 * c / total, 1)) for name, c in counter.most_common(n)]

    if total == 0:
        return {"samples": 0}
    steps = {
        name: round(100.0 * c / total, 1)
        for name, c in inclusive.items()
        if name.startswith("collector/pipeline.py:")
    }
    return {
        "samples": total,
        "layers_percent": dict(share(layers, len(LAYERS) + 1)),
        "pipeline_inclusive_percent": dict(sorted(steps.items(), key=lambda kv: -kv[1])),
        "top_self_percent": share(own, top),
        "top_inclusive_percent": share(inclusive, top),
    }
