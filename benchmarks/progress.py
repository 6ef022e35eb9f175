"""A progress bar for the benchmark on stderr: one step per measured phase.

On a terminal the bar stays on the last line and the runner's messages scroll above it; in a
log (not a terminal) each step is one line, ``[ 3/14] streamtally-plain 50%  12 s``.
"""

from __future__ import annotations

import sys
import time
from typing import IO

WIDTH = 28


class Bar:
    def __init__(self, total: int, out: IO[str] | None = None) -> None:
        self.total = max(1, total)
        self.done = 0
        self.label = "starting"
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty()
        self.began = time.monotonic()

    def line(self) -> str:
        filled = round(WIDTH * min(self.done, self.total) / self.total)
        elapsed = time.monotonic() - self.began
        return (
            f"[{'#' * filled}{'-' * (WIDTH - filled)}] {self.done:>2}/{self.total} "
            f"{self.label}  {elapsed:.0f} s"
        )

    def _draw(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line())
            self.out.flush()

    def say(self, text: str) -> None:
        """A message of the runner, above the bar."""
        if self.tty:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        self._draw()
        self.out.flush()

    def step(self, label: str) -> None:
        self.done += 1
        self.label = label
        if self.tty:
            self._draw()
        else:
            width = len(str(self.total))
            elapsed = time.monotonic() - self.began
            self.out.write(f"[{self.done:>{width}}/{self.total}] {label}  {elapsed:.0f} s\n")
            self.out.flush()

    def finish(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + self.line() + "\n")
            self.out.flush()
