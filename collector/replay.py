"""Replay guard for sealed reports: the same HPKE ``enc`` twice within the window is refused (422).

Every sealed report carries ``enc``, the 32-byte ephemeral X25519 public key of one HPKE
encapsulation: a fresh random value per report. A body seen before is a replay.

Memory: two generations of Python ``set``s holding 60 bits of ``enc`` as an ``int`` (two
30-bit CPython digits, a 32-byte object) -- about 80 bytes per remembered ``enc`` with the set
slot, measured in ``tests/collector/test_replay.py``. Sixty bits keep the chance that a fresh
``enc`` is mistaken for a replay below 2e-12 with two million entries remembered.

Window: a new generation starts every ``window_seconds`` and lookups check both, so an
``enc`` is remembered for at least ``window_seconds`` (and at most twice that). Under extreme
load, when the current generation holds ``max_entries / 2`` encs, it is rotated early and
``streamtally_replay_early_rotations_total`` counts it: the effective window then shortens
instead of memory growing past ``max_entries``.

Call it after the body decrypted successfully, so a forged ``enc`` cannot fill the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter

EARLY_ROTATIONS = Counter(
    "streamtally_replay_early_rotations_total",
    "Times the replay window was cut short because it held its maximum number of encs",
)

_BITS_KEPT = 60  # two 30-bit CPython digits: 32 bytes per int instead of 48 for 64 bits
_MASK = (1 << _BITS_KEPT) - 1


class ReplayGuard:
    """Remembers recent ``enc`` values for at least ``window_seconds``, bounded in memory."""

    __slots__ = ("_clock", "_current", "_generation_cap", "_previous", "_rotated_at", "_window")

    def __init__(
        self,
        window_seconds: int,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        if max_entries < 2:
            raise ValueError("max_entries must be at least 2")
        self._window = float(window_seconds)
        self._generation_cap = max_entries // 2
        self._clock = clock
        self._current: set[int] = set()
        self._previous: set[int] = set()
        self._rotated_at = clock()

    def seen(self, enc: bytes) -> bool:
        """True if ``enc`` was seen within the window (a replay); else remember it, False."""
        now = self._clock()
        if now - self._rotated_at >= self._window:
            self._rotate_on_time(now)
        tag = int.from_bytes(enc[:8], "little") & _MASK
        current = self._current
        if tag in current or tag in self._previous:
            return True
        current.add(tag)
        if len(current) >= self._generation_cap:
            self._previous = current
            self._current = set()
            self._rotated_at = now
            EARLY_ROTATIONS.inc()
        return False

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def _rotate_on_time(self, now: float) -> None:
        if now - self._rotated_at >= 2 * self._window:
            # Silent for two windows: everything remembered is older than the window.
            self._previous = set()
        else:
            self._previous = self._current
        self._current = set()
        self._rotated_at = now

    def __repr__(self) -> str:
        return f"ReplayGuard(window={self._window:g}s, remembered={len(self)})"
