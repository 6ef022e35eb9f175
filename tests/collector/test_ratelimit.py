"""The per-client rate limit: 429 with Retry-After once a client's bucket is empty."""

from __future__ import annotations

import math
import random
import tracemalloc

import pytest
from prometheus_client import REGISTRY

from collector.ratelimit import RateLimiter


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def evictions() -> float:
    return REGISTRY.get_sample_value("streamtally_ratelimit_evictions_total") or 0.0


@pytest.mark.parametrize(
    ("rate", "burst"), [(20.0, 200), (1.0, 1), (0.5, 3)], ids=["default", "no-burst", "slow"]
)
def test_a_burst_is_allowed_then_refused_with_the_wait(rate: float, burst: int) -> None:
    limiter = RateLimiter(rate, burst, clock=Clock())
    assert all(limiter.check(7) == 0.0 for _ in range(burst))
    wait = limiter.check(7)
    assert wait == pytest.approx(1 / rate)
    assert math.ceil(wait) >= 1  # what the caller puts in Retry-After


def test_tokens_come_back_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 4, clock=clock)
    for _ in range(4):
        limiter.check(1)
    assert limiter.check(1) == pytest.approx(0.5)
    clock.now += 0.25
    assert limiter.check(1) == pytest.approx(0.25)  # refusals do not consume
    clock.now += 0.25
    assert limiter.check(1) == 0.0
    assert limiter.check(1) == pytest.approx(0.5)
    clock.now += 10
    assert [limiter.check(1) for _ in range(5)] == [0.0] * 4 + [pytest.approx(0.5)]


def test_a_steady_sender_at_the_rate_is_never_refused() -> None:
    clock = Clock()
    limiter = RateLimiter(20.0, 5, clock=clock)
    for _ in range(2000):
        clock.now += 0.05
        assert limiter.check(3) == 0.0


def test_over_a_long_run_the_allowed_count_is_rate_times_time_plus_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, 20, clock=clock)
    allowed = 0
    for _ in range(60_000):  # 60 s at 1000 attempts per second
        clock.now += 0.001
        allowed += limiter.check(9) == 0.0
    assert allowed == pytest.approx(10 * 60 + 20, abs=2)


def test_clients_are_limited_separately() -> None:
    limiter = RateLimiter(1.0, 2, clock=Clock())
    limiter.check(1)
    limiter.check(1)
    assert limiter.check(1) > 0
    assert limiter.check(2) == 0.0


def test_full_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(20.0, 200, clock=clock)  # an empty bucket refills in 10 s
    for client in range(1000):
        limiter.check(client)
    assert len(limiter) == 1000
    clock.now += 10.0
    limiter.check(5000)
    clock.now += 10.0
    limiter.check(5001)
    assert len(limiter) == 2


def test_a_refused_client_is_not_forgotten_while_its_bucket_is_empty() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 10, clock=clock)  # refill horizon 10 s
    for _ in range(10):
        limiter.check(1)
    for _ in range(100):  # keeps hammering: refused every time, across several rotations
        clock.now += 0.3
        if limiter.check(1) == 0.0:
            assert limiter.check(1) > 0  # at most the one token that came back


def test_bounded_by_max_clients_and_evictions_are_counted() -> None:
    clock = Clock()
    limiter = RateLimiter(20.0, 200, max_clients=100, clock=clock)
    before = evictions()
    for client in range(1000):
        limiter.check(client)
        assert len(limiter) <= 100
    assert evictions() - before == 900
    # The clients that stayed are still limited.
    limiter.check(999)
    assert len(limiter) == 100


def test_repr_names_no_client() -> None:
    limiter = RateLimiter(1.0, 1, clock=Clock())
    limiter.check(123456789123)
    assert "123456789123" not in repr(limiter)


@pytest.mark.parametrize(
    ("rate", "burst", "clients", "setting"),
    [(0.0, 1, 10, "rate_per_second"), (1.0, 0, 10, "burst"), (1.0, 1, 0, "max_clients")],
    ids=["no-rate", "no-burst", "no-clients"],
)
def test_nonsense_settings_are_refused(rate: float, burst: int, clients: int, setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        RateLimiter(rate, burst, clients)


def test_memory_per_client_is_bounded() -> None:
    """About 100 bytes per client (speed is measured by benchmarks/micro.py)."""
    n = 100_000
    clients = [random.getrandbits(60) for _ in range(n)]
    limiter = RateLimiter(20.0, 200)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for client in clients:
        limiter.check(client)
    per_client = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    print(f"ratelimit: {per_client:.0f} B/client")
    assert per_client < 150


def test_buckets_taken_over_at_a_hot_restart_stay_spent() -> None:
    """The next code of a hot restart adopts the buckets: a spent client stays refused, and
    gets back exactly what the time since gave it, as if no restart had happened."""
    clock = Clock()
    old = RateLimiter(1.0, 3, clock=clock)
    assert [old.check(7) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert old.check(7) > 0
    new = RateLimiter(1.0, 3, clock=clock)
    new.take_over(*old.handover_state())
    assert new.check(7) == pytest.approx(old.check(7))
    clock.now += 1.0
    assert new.check(7) == 0.0
    assert new.check(7) > 0
    assert new.check(8) == 0.0  # another client: a full bucket


def test_buckets_of_another_shape_are_refused() -> None:
    with pytest.raises(TypeError):
        RateLimiter(1.0, 3).take_over({"203.0.113.9": 1.0}, {}, 0.0)  # type: ignore[dict-item]
