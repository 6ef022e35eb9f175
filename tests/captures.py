"""Where the real players' captures live: tests/fixtures/cmcd, captures of real
players (hls.js 1.7.4 and Shaka 5.2.12 in Chromium; see its README), kept in
the repository so that a fresh clone's tests and benchmarks need nothing beside it."""

from __future__ import annotations

from pathlib import Path

CMCD_CAPTURES = Path(__file__).resolve().parent / "fixtures" / "cmcd"
