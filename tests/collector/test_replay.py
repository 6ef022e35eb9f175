"""The replay guard: a sealed body's enc seen again within the window is a replay (422)."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from prometheus_client import REGISTRY

from collector.replay import ReplayGuard


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def early_rotations() -> float:
    return REGISTRY.get_sample_value("streamtally_replay_early_rotations_total") or 0.0


def test_first_sighting_is_new_and_second_is_a_replay() -> None:
    guard = ReplayGuard(600, 1000, clock=Clock())
    enc = os.urandom(32)
    assert guard.seen(enc) is False
    assert guard.seen(enc) is True
    assert guard.seen(os.urandom(32)) is False


@pytest.mark.parametrize(
    "later",
    [1, 299, 300, 599, 599.999],
    ids=["1s", "299s", "half-window", "599s", "just-inside"],
)
def test_replay_is_refused_for_the_whole_window(later: float) -> None:
    clock = Clock()
    guard = ReplayGuard(600, 10_000, clock=clock)
    enc = os.urandom(32)
    guard.seen(enc)
    # Traffic in between drives rotations at any moment.
    steps = 50
    for i in range(1, steps + 1):
        clock.now = 1000.0 + later * i / steps
        guard.seen(os.urandom(32))
    assert guard.seen(enc) is True


@pytest.mark.parametrize(
    ("added_at", "checked_at"),
    [(0, 600), (599, 1199), (300, 900)],
    ids=["start-of-generation", "end-of-generation", "middle"],
)
def test_remembered_at_least_the_window_whatever_the_phase(
    added_at: float, checked_at: float
) -> None:
    clock = Clock(0.0)
    guard = ReplayGuard(600, 10_000, clock=clock)
    clock.now = added_at
    enc = os.urandom(32)
    guard.seen(enc)
    for t in range(int(added_at), int(checked_at)):
        clock.now = t
        guard.seen(os.urandom(32))
    clock.now = checked_at - 0.001
    assert guard.seen(enc) is True


def test_forgotten_after_two_windows() -> None:
    clock = Clock()
    guard = ReplayGuard(600, 10_000, clock=clock)
    enc = os.urandom(32)
    guard.seen(enc)
    clock.now += 1200
    assert guard.seen(enc) is False
    assert len(guard) == 1


def test_memory_is_bounded_by_early_rotation_which_is_counted() -> None:
    clock = Clock()
    guard = ReplayGuard(600, 1000, clock=clock)
    before = early_rotations()
    encs = [os.urandom(32) for _ in range(5000)]
    for enc in encs:
        assert guard.seen(enc) is False
        assert len(guard) <= 1000
    assert early_rotations() - before >= 8
    # The most recent ones are still refused: the window shortened, it did not vanish.
    assert guard.seen(encs[-1]) is True


def test_same_first_eight_bytes_count_as_the_same_enc() -> None:
    guard = ReplayGuard(600, 1000, clock=Clock())
    enc = os.urandom(32)
    assert guard.seen(enc) is False
    assert guard.seen(enc[:8] + os.urandom(24)) is True


def test_repr_shows_no_enc() -> None:
    guard = ReplayGuard(600, 1000, clock=Clock())
    enc = os.urandom(32)
    guard.seen(enc)
    text = repr(guard)
    assert enc.hex()[:8] not in text
    assert str(int.from_bytes(enc[:8], "little")) not in text


@pytest.mark.parametrize(
    ("window", "entries", "setting"),
    [(0, 1000, "window_seconds"), (600, 1, "max_entries")],
    ids=["no-window", "no-room"],
)
def test_nonsense_settings_are_refused(window: int, entries: int, setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        ReplayGuard(window, entries)


def test_memory_and_speed_per_enc() -> None:
    """About 75 bytes and about half a microsecond per enc (numbers printed with -s)."""
    n = 100_000
    encs = [os.urandom(32) for _ in range(n)]
    guard = ReplayGuard(600, 2 * n + 2)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for enc in encs:
        guard.seen(enc)
    per_entry = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()

    print(f"replay: {per_entry:.0f} B/enc")
    assert per_entry < 120
