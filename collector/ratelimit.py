"""Per-client rate limit (429 with Retry-After): a token bucket kept as one float per client.

The bucket is stored the GCRA way (generic cell rate algorithm, equivalent to a token bucket
of ``burst`` tokens refilled at ``rate_per_second``): per client only its *theoretical arrival
time* ``tat``, the moment its bucket will be full again. A report at ``now`` is allowed when
``tat - now <= (burst - 1) / rate`` and then moves ``tat`` on by ``1 / rate``; otherwise it
is refused and the client may retry in ``tat - now - (burst - 1) / rate`` seconds.

Forgetting full buckets: clients live in two generations (dicts) that rotate every
``burst / rate`` seconds, the time an empty bucket takes to refill. A client seen in the
older generation moves to the current one. When the older generation is dropped, every
bucket in it was last touched more than ``burst / rate`` seconds ago, so it is full again and
forgetting it changes nothing. Dropping a generation is one C-level dict free, so no sweep
ever walks the clients in Python.

Bound: at ``max_clients`` a new client first evicts one from the older generation (rotating
early if that is empty) and ``streamtally_ratelimit_evictions_total`` counts it. An evicted
client starts again with a full bucket: under a flood of distinct clients the limiter fails
open rather than refusing everyone or growing without bound.

``client`` is an opaque int (``ViewerKeys.client_handle``, ``address_handle`` or
``session_handle``: keyed hashes under the per-process secret), never an IP address or a
session id.

Hot restart: :meth:`RateLimiter.handover_state` gives the buckets as plain data (the opaque
handles and their ``tat``) and :meth:`RateLimiter.take_over` adopts them, so that a client
cannot double its budget by timing a ``SIGHUP``. The handles stay valid because the process
secret they are keyed with is handed over too (``aggregator/hot_restart.py``), and ``tat``
stays valid because the clock is ``time.monotonic`` (``CLOCK_MONOTONIC``: the same clock
before and after an ``execv`` in the same process).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter

EVICTIONS = Counter(
    "streamtally_ratelimit_evictions_total",
    "Clients forgotten early because the rate limiter held its maximum number of clients",
)


class RateLimiter:
    """Token bucket per client; ``check`` answers 0.0 (allowed) or the seconds to wait."""

    __slots__ = (
        "_allowance",
        "_clock",
        "_current",
        "_horizon",
        "_interval",
        "_max_clients",
        "_previous",
        "_rotated_at",
    )

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        max_clients: int = 1_000_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self._interval = 1.0 / rate_per_second  # seconds one token takes to come back
        self._allowance = (burst - 1) * self._interval  # how far tat may run ahead of now
        self._horizon = burst * self._interval  # an empty bucket is full again after this
        self._max_clients = max_clients
        self._clock = clock
        self._current: dict[int, float] = {}
        self._previous: dict[int, float] = {}
        self._rotated_at = clock()

    def check(self, client: int) -> float:
        """0.0 if allowed (one token consumed), else seconds until a token is available."""
        now = self._clock()
        if now - self._rotated_at >= self._horizon:
            self._rotate(now)
        current = self._current
        tat = current.get(client)
        if tat is None:
            tat = self._previous.pop(client, None)
            if tat is None:
                if len(current) + len(self._previous) >= self._max_clients:
                    self._evict_one()
                tat = now
        if tat < now:
            tat = now
        wait = tat - now - self._allowance
        if wait > 0.0:
            current[client] = tat
            return wait
        current[client] = tat + self._interval
        return 0.0

    def handover_state(self) -> tuple[dict[int, float], dict[int, float], float]:
        """The buckets for a hot restart: (current, previous, rotated_at), opaque handles only."""
        return self._current, self._previous, self._rotated_at

    def take_over(
        self, current: dict[int, float], previous: dict[int, float], rotated_at: float
    ) -> None:
        """Adopt the buckets of the code this process ran before a hot restart."""
        buckets = (*current.items(), *previous.items())
        if not all(type(k) is int and type(v) is float for k, v in buckets):
            raise TypeError("a rate limiter bucket is not (int, float)")
        self._current = dict(current)
        self._previous = dict(previous)
        self._rotated_at = float(rotated_at)
        while len(self) > self._max_clients:
            self._evict_one()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= 2 * self._horizon:
            self._previous = {}  # every bucket is full again
        else:
            self._previous = self._current
        self._current = {}
        self._rotated_at = now

    def _evict_one(self) -> None:
        if not self._previous:
            self._previous = self._current
            self._current = {}
        self._previous.popitem()
        EVICTIONS.inc()

    def __repr__(self) -> str:
        return f"RateLimiter(clients={len(self)})"
