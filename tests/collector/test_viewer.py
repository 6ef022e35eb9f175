"""Privacy invariant 2: viewer keys under a per-UTC-day secret that only ever lives in memory."""

from __future__ import annotations

import copy
import gc
import hashlib
import math
import pickle
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from collector.viewer import ViewerKeys

UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0 Safari/537.36"
)
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 11, 25, 0, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_same_viewer_same_day_gets_the_same_key() -> None:
    keys = ViewerKeys(clock=Clock())
    first = keys.key("acct-1", "192.0.2.7", UA, NOON)
    assert first is not None
    assert keys.key("acct-1", "192.0.2.7", UA, NOON + 5 * HOUR) == first
    assert 0 <= first < 2**64


@pytest.mark.parametrize(
    ("account", "ip", "ua"),
    [
        ("acct-2", "192.0.2.7", UA),
        ("acct-1", "192.0.2.8", UA),
        ("acct-1", "192.0.2.7", UA + " Edg/156"),
        ("acct-1192.0.2.7", "", UA),  # shifting bytes between fields is not the same input
        ("acct-1", "192.0.2.7" + UA, ""),
    ],
    ids=["other-account", "other-ip", "other-ua", "shifted-account-ip", "shifted-ip-ua"],
)
def test_any_other_input_gets_another_key(account: str, ip: str, ua: str) -> None:
    keys = ViewerKeys(clock=Clock())
    assert keys.key(account, ip, ua, NOON) != keys.key("acct-1", "192.0.2.7", UA, NOON)


def test_the_next_utc_day_gets_another_key() -> None:
    clock = Clock(MIDNIGHT - 1)
    keys = ViewerKeys(clock=clock)
    before = keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - 1)
    clock.now = MIDNIGHT
    after = keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT)
    assert before is not None
    assert after is not None
    assert before != after
    assert keys.day_of(MIDNIGHT - 1) == date(2026, 11, 24)
    assert keys.day_of(MIDNIGHT) == date(2026, 11, 25)


def test_two_processes_never_share_keys() -> None:
    a = ViewerKeys(clock=Clock())
    b = ViewerKeys(clock=Clock())
    assert a.key("acct-1", "192.0.2.7", UA, NOON) != b.key("acct-1", "192.0.2.7", UA, NOON)


def test_yesterday_is_kept_through_the_grace_period_then_destroyed() -> None:
    clock = Clock(MIDNIGHT - HOUR)
    keys = ViewerKeys(grace_seconds=3600, clock=clock)
    yesterday = keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - HOUR)
    clock.now = MIDNIGHT + HOUR - 1
    keys.rotate()
    assert keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - HOUR) == yesterday
    clock.now = MIDNIGHT + HOUR
    keys.rotate()
    assert keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - HOUR) is None
    assert keys.days() == []


def test_the_secret_is_destroyed_even_if_rotate_is_never_called() -> None:
    clock = Clock(MIDNIGHT - HOUR)
    keys = ViewerKeys(grace_seconds=60, clock=clock)
    keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - HOUR)
    clock.now = MIDNIGHT + 61
    keys.key("acct-1", "192.0.2.7", UA, clock.now)  # a report of today
    assert keys.days() == [date(2026, 11, 25)]
    assert keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - HOUR) is None


def test_a_destroyed_day_is_never_drawn_again_even_if_the_clock_steps_back() -> None:
    clock = Clock(MIDNIGHT - HOUR)
    keys = ViewerKeys(grace_seconds=60, clock=clock)
    keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - HOUR)
    clock.now = MIDNIGHT + 120
    keys.rotate()
    clock.now = MIDNIGHT - 10  # NTP stepped the clock back
    assert keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - 10) is None


def test_a_day_over_before_the_process_started_gets_no_secret() -> None:
    keys = ViewerKeys(grace_seconds=3600, clock=Clock(MIDNIGHT + 2 * HOUR))
    assert keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - HOUR) is None
    assert keys.days() == []


def test_a_time_far_ahead_of_the_clock_is_a_programming_error() -> None:
    keys = ViewerKeys(clock=Clock())
    with pytest.raises(ValueError, match="ahead of the clock"):
        keys.key("acct-1", "192.0.2.7", UA, NOON + 3 * 86400)


def test_handles_are_stable_across_midnight_and_separate_per_account() -> None:
    clock = Clock(MIDNIGHT - 1)
    keys = ViewerKeys(grace_seconds=0, clock=clock)
    sid = "d1423153-1829-4b25-98e6-097fd5b6c490"
    before = keys.session_handle("acct-1", sid)
    client = keys.client_handle("192.0.2.7", UA)
    clock.now = MIDNIGHT + 10
    keys.rotate()
    assert keys.session_handle("acct-1", sid) == before
    assert keys.client_handle("192.0.2.7", UA) == client
    assert keys.session_handle("acct-2", sid) != before
    assert keys.client_handle("192.0.2.8", UA) != client
    assert 0 <= before < 2**60
    assert 0 <= client < 2**60


def test_handles_are_not_viewer_keys() -> None:
    keys = ViewerKeys(clock=Clock())
    assert keys.client_handle("192.0.2.7", UA) != keys.key("", "192.0.2.7", UA, NOON)


def test_repr_shows_no_secret() -> None:
    keys = ViewerKeys(clock=Clock())
    keys.key("acct-1", "192.0.2.7", UA, NOON)
    secret = bytes(next(iter(keys._secrets.values())))
    text = repr(keys) + str(keys)
    assert secret.hex() not in text
    assert repr(secret) not in text
    assert "192.0.2.7" not in text


@pytest.mark.parametrize(
    "dump",
    [pickle.dumps, copy.copy, copy.deepcopy],
    ids=["pickle", "copy", "deepcopy"],
)
def test_cannot_be_pickled_or_copied(dump: Any) -> None:
    keys = ViewerKeys(clock=Clock())
    keys.key("acct-1", "192.0.2.7", UA, NOON)
    with pytest.raises(TypeError, match="must never leave memory"):
        dump(keys)


def test_nothing_is_written_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").write_text("x")
    before = sorted((p.name, p.stat().st_size) for p in tmp_path.rglob("*"))
    clock = Clock(MIDNIGHT - HOUR)
    keys = ViewerKeys(grace_seconds=60, clock=clock)
    for i in range(100):
        keys.key(f"acct-{i}", f"192.0.2.{i}", UA, clock.now)
        keys.session_handle(f"acct-{i}", "sid")
        keys.client_handle(f"192.0.2.{i}", UA)
    clock.now = MIDNIGHT + 120
    keys.rotate()
    after = sorted((p.name, p.stat().st_size) for p in tmp_path.rglob("*"))
    assert after == before


def _reachable(root: object) -> Iterator[object]:
    """Every object reachable from ``root`` through references the garbage collector knows."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        yield obj
        todo.extend(gc.get_referents(obj))


def test_after_rotation_yesterdays_keys_cannot_be_recomputed_from_the_object() -> None:
    clock = Clock(MIDNIGHT - HOUR)
    keys = ViewerKeys(grace_seconds=60, clock=clock)
    old_key = keys.key("acct-1", "192.0.2.7", UA, clock.now)
    held = keys._secrets[keys.day_of(clock.now).toordinal() - date(1970, 1, 1).toordinal()]
    secret = bytes(held)
    # The documented construction: BLAKE2b-64 keyed with the day's secret, fields length-prefixed.
    message = b"6:acct-19:192.0.2.7" + UA.encode()
    assert old_key == int.from_bytes(
        hashlib.blake2b(message, digest_size=8, key=secret, person=b"st-viewer").digest(), "big"
    )

    clock.now = MIDNIGHT + 120
    keys.rotate()
    keys.key("acct-1", "192.0.2.7", UA, clock.now)  # today's secret exists, yesterday's not

    assert held == bytearray(32)  # the bytearray that held it was overwritten in place
    assert keys.key("acct-1", "192.0.2.7", UA, MIDNIGHT - HOUR) is None
    for obj in _reachable(keys):
        if isinstance(obj, bytes | bytearray | memoryview):
            data = bytes(obj)
            assert secret not in data
            # Brute force: no 32-byte window of anything it holds is yesterday's key.
            for i in range(len(data) - 31):
                candidate = hashlib.blake2b(
                    message, digest_size=8, key=data[i : i + 32], person=b"st-viewer"
                )
                assert int.from_bytes(candidate.digest(), "big") != old_key
        elif isinstance(obj, int) and not isinstance(obj, bool) and obj.bit_length() > 200:
            assert secret not in obj.to_bytes(math.ceil(obj.bit_length() / 8), "big")
        elif hasattr(obj, "copy") and hasattr(obj, "digest") and hasattr(obj, "update"):
            # A live keyed hash object: whatever it is keyed with, it is not yesterday's.
            h = obj.copy()
            h.update(message)
            assert int.from_bytes(h.digest(), "big") != old_key
