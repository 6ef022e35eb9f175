"""The viewer key (privacy invariant 2) and the per-process handles for sessions and clients.

``key`` is a 64-bit keyed BLAKE2b of (account, IP, user agent) under a secret of the UTC day of
the report's arrival. Each day's 32-byte secret is drawn at random (``secrets.token_bytes``)
the first time that day is needed, lives only in this object's memory, and is destroyed
``grace_seconds`` after the day ends: its ``bytearray`` is overwritten with zeros and the
keyed hash object built from it is dropped (CPython's BLAKE2 objects zero their state when
freed). After that, the day's keys cannot be recomputed from anything on disk, in the
configuration or in this object. Nothing here is ever logged, written or pickled:
``repr`` shows no secret and pickling or copying raises ``TypeError``.

Best effort, as anywhere in Python: ``secrets.token_bytes`` returns an immutable ``bytes``
that is copied into the ``bytearray`` and then freed without being zeroed, so a copy may
linger in freed heap memory until it is reused. A memory dump of the live process is outside
what this protects against; disk, configuration and logs are not.

``session_handle`` and ``client_handle`` use a separate secret drawn once per process run, so
a session that crosses midnight keeps its handle.

A hot restart (``aggregator/hot_restart.py``) hands every secret to the new code of the same
process through anonymous memory, never a file: :meth:`ViewerKeys.handover_secrets` gives
the live buffers (written straight from them), :meth:`ViewerKeys.take_over` adopts copies
and the caller zeroes what it read them from. They are 60-bit ints (two 30-bit CPython
digits: 32 bytes per int instead of 48), used as dict keys by the deduper and rate limiter.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, NoReturn

DAY_SECONDS = 86400
_EPOCH = date(1970, 1, 1)
_HANDLE_MASK = (1 << 60) - 1


def _message(first: str, second: str, third: str) -> bytes:
    """Unambiguous encoding: ``len:first len:second third`` (lengths in code points), UTF-8."""
    return f"{len(first)}:{first}{len(second)}:{second}{third}".encode("utf-8", "surrogatepass")


def _keyed(secret: bytearray, person: bytes) -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=8, key=secret, person=person)


class ViewerKeys:
    """Daily viewer keys and per-process handles, all from secrets held only in memory."""

    __slots__ = (
        "_address",
        "_client",
        "_clock",
        "_dead_through",
        "_grace",
        "_hashers",
        "_next_expiry",
        "_process",
        "_secrets",
        "_session",
    )

    def __init__(self, grace_seconds: int = 3600, clock: Callable[[], float] = time.time) -> None:
        if grace_seconds < 0:
            raise ValueError("grace_seconds must not be negative")
        self._grace = grace_seconds
        self._clock = clock
        self._secrets: dict[int, bytearray] = {}  # day number (days since 1970-01-01) -> secret
        self._hashers: dict[
            int, hashlib.blake2b
        ] = {}  # day number -> blake2b keyed with that secret
        self._next_expiry = math.inf
        # Every day up to this one is over: its secret is gone and is never drawn again.
        self._dead_through = self._last_dead_day(clock())
        self._process = bytearray(secrets.token_bytes(32))  # kept for a hot restart only
        self._client = _keyed(self._process, b"st-client")
        self._address = _keyed(self._process, b"st-address")
        self._session = _keyed(self._process, b"st-session")

    def key(self, account_id: str, ip: str, ua: str, at: float) -> int | None:
        """The 64-bit viewer key for the UTC day of ``at``; None if that day's secret is gone."""
        if self._clock() >= self._next_expiry:
            self.rotate()
        day = int(at // DAY_SECONDS)
        hasher = self._hashers.get(day)
        if hasher is None:
            hasher = self._open_day(day)
            if hasher is None:
                return None
        h = hasher.copy()
        h.update(_message(account_id, ip, ua))
        return int.from_bytes(h.digest(), "big")

    def client_handle(self, ip: str, ua: str) -> int:
        """60-bit keyed hash of (IP, user agent) for the rate limiter; per-process secret."""
        h = self._client.copy()
        h.update(_message(ip, ua, ""))
        return int.from_bytes(h.digest(), "big") & _HANDLE_MASK

    def address_handle(self, ip: str) -> int:
        """60-bit keyed hash of the client address for the per-address cap; per-process secret."""
        h = self._address.copy()
        h.update(_message(ip, "", ""))
        return int.from_bytes(h.digest(), "big") & _HANDLE_MASK

    def session_handle(self, account_id: str, sid: str) -> int:
        """60-bit keyed hash of (account, sid); per-process secret, stable across midnight."""
        h = self._session.copy()
        h.update(_message(account_id, sid, ""))
        return int.from_bytes(h.digest(), "big") & _HANDLE_MASK

    def rotate(self) -> None:
        """Destroy every secret whose day ended more than ``grace_seconds`` ago."""
        now = self._clock()
        self._dead_through = max(self._dead_through, self._last_dead_day(now))
        for day in [d for d in self._secrets if d <= self._dead_through]:
            secret = self._secrets.pop(day)
            secret[:] = bytes(len(secret))  # overwrite in place before letting go
            del self._hashers[day]  # freed now: CPython zeroes a BLAKE2 object's state
        self._next_expiry = min(map(self._expiry, self._secrets), default=math.inf)

    def open_days(self, lookahead_seconds: float) -> None:
        """Draw the secret of today and, within ``lookahead_seconds`` of midnight, of
        tomorrow, before any report needs them (a cluster shard hands them to collectors)."""
        now = self._clock()
        for at in (now, now + lookahead_seconds):
            day = int(at // DAY_SECONDS)
            if day not in self._hashers:
                self._open_day(day)

    def handover_secrets(self) -> tuple[bytearray, dict[int, bytearray]]:
        """The live secrets for a hot restart: the process secret and each day's (by day
        number). The buffers themselves, not copies: write them, never keep or log them."""
        self.rotate()
        return self._process, dict(self._secrets)

    def take_over(self, process: bytearray, days: dict[int, bytearray]) -> None:
        """Adopt the secrets of the code this process ran before a hot restart (copies are
        kept; the caller zeroes its buffers). Days already over are destroyed at once."""
        if len(process) != 32 or any(len(secret) != 32 for secret in days.values()):
            raise ValueError("a secret is not 32 bytes")
        for secret in (self._process, *self._secrets.values()):
            secret[:] = bytes(len(secret))
        self._process = bytearray(process)
        self._client = _keyed(self._process, b"st-client")
        self._address = _keyed(self._process, b"st-address")
        self._session = _keyed(self._process, b"st-session")
        self._secrets = {day: bytearray(secret) for day, secret in days.items()}
        self._hashers = {day: _keyed(secret, b"st-viewer") for day, secret in self._secrets.items()}
        self._next_expiry = min(map(self._expiry, self._secrets), default=math.inf)
        self.rotate()

    def day_of(self, at: float) -> date:
        """The UTC day of a unix time."""
        return _EPOCH + timedelta(days=int(at // DAY_SECONDS))

    def days(self) -> list[date]:
        """The UTC days whose secret currently exists (for tests and metrics, never the secret)."""
        return [_EPOCH + timedelta(days=d) for d in sorted(self._secrets)]

    def _open_day(self, day: int) -> hashlib.blake2b | None:
        if day <= self._dead_through:
            return None
        now = self._clock()
        if self._expiry(day) <= now:
            return None
        if day > now // DAY_SECONDS + 1:
            raise ValueError("at is more than a day ahead of the clock")
        secret = bytearray(secrets.token_bytes(32))
        hasher = _keyed(secret, b"st-viewer")
        self._secrets[day] = secret
        self._hashers[day] = hasher
        self._next_expiry = min(self._next_expiry, self._expiry(day))
        return hasher

    def _expiry(self, day: int) -> float:
        return float((day + 1) * DAY_SECONDS + self._grace)

    def _last_dead_day(self, now: float) -> int:
        # Day d is dead once (d + 1) * DAY + grace <= now.
        return math.floor((now - self._grace) / DAY_SECONDS) - 1

    def __repr__(self) -> str:
        return f"ViewerKeys(days={len(self._secrets)}, grace={self._grace}s)"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError("ViewerKeys holds secrets that must never leave memory")

    def __reduce__(self) -> NoReturn:
        raise TypeError("ViewerKeys holds secrets that must never leave memory")
