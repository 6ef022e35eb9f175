"""dp mode (aggregator/release/noise.py, aggregator/release/budget.py): noise, re-reads,
budget, and the
attack k-anonymity cannot stop — someone who controls k-1 (or many more) viewers.

OpenDP draws from the operating system's CSPRNG and cannot be seeded, so the noise is
tested statistically, with enough samples and bounds stated in each test; only the
traffic (who fails) comes from a seeded ``random.Random``.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest

from aggregator.counting.cells import Group, RowCell
from aggregator.release.ledger import Ledger
from aggregator.release.noise import BOUNDS, DpPolicy, mechanism

T0 = 1_795_478_400  # 2026-11-24 00:00 UTC
ACCOUNT = "acc-dp"
K = 5
POLICY = DpPolicy()  # the defaults: epsilon 2 per viewer-day


# ---- traffic: one minute of one account, straight into the release -------------------------


def minute(streams: dict[str, list[tuple[int, int, int, int]]], at: int = T0) -> Group:
    """A closed minute: stream -> [(viewer, views, playing_ms, failures)], stream totals only."""
    g = Group(ACCOUNT, "minute", datetime.fromtimestamp(at, UTC), at + 60)
    for stream, viewers in streams.items():
        cell = g.cell(stream, "", "")
        for viewer, views, playing_ms, failures in viewers:
            cell.viewers.add(viewer)
            cell.views += views
            cell.playing_ms += playing_ms
            cell.failures += failures
            for name, n in (("views", views), ("playing", playing_ms), ("failures", failures)):
                if n:
                    cell.hold(name, {viewer: n})
    return g


def run_day(
    minutes: list[Group], dp: DpPolicy | None = POLICY
) -> tuple[Ledger, dict[tuple[str, int, str], dict[str, float]]]:
    """Release ``minutes`` and close their hours and day; every row as written."""
    ledger = Ledger(lambda _a: K, (lambda _a, _d: dp) if dp is not None else None)
    rows: dict[tuple[str, int, str], dict[str, float]] = {}

    def write() -> None:
        due = ledger.groups(settle_open=True)
        for g in due:
            for r in g.to_rows():
                rows[(g.granularity, int(g.window_start.timestamp()), r.key.stream)] = {
                    "views": r.views,
                    "unique_viewers": r.unique_viewers,
                    "playing_seconds": r.playing_seconds,
                    "failures": r.failures,
                }
        ledger.written(due)

    for m in minutes:
        ledger.add_minute(m)
        ledger.advance(int(m.window_start.timestamp()) + 60)
        write()
    ledger.advance(T0 + 2 * 86_400)
    write()
    return ledger, rows


def discrete_laplace_cdf(x: int, scale: float) -> float:
    """P[X <= x] for the discrete Laplace with P[X = x] proportional to exp(-|x| / scale)."""
    q = math.exp(-1 / scale)
    if x < 0:
        return q ** (-x) / (1 + q)
    return 1 - q ** (x + 1) / (1 + q)


# ---- the attack -------------------------------------------------------------------------------


def attack(n_attackers: int, victim_fails: bool, dp: DpPolicy | None) -> tuple[bool | None, Ledger]:
    """Attackers 1..n each make one view that fails (so that k viewers are behind the
    failure count whenever the victim's fails too); the victim (0) one view that fails or
    not. The attacker reads every row of the stream and subtracts what they sent.
    Returns the attacker's guess (None: nothing published to guess from)."""
    viewers = [(a, 1, 30_000, 1) for a in range(1, n_attackers + 1)]
    viewers.append((0, 1, 30_000, int(victim_fails)))
    ledger, rows = run_day([minute({"news": viewers})], dp)
    shown = [r for (_, _, stream), r in rows.items() if stream == "news"]
    if not shown:
        return None, ledger
    # the finest row with the stream (any row holds the same parts: hour and day add up)
    failures = min(shown, key=lambda r: r["failures"])["failures"]
    return failures - n_attackers >= 0.5, ledger  # minus the attackers' own failures


@pytest.mark.parametrize("victim_fails", [True, False], ids=["victim-fails", "victim-plays"])
def test_k_minus_1_attack_recovers_the_victim_exactly_in_k_mode(victim_fails: bool) -> None:
    """k = 5: four scripted viewers and the victim. In k mode every row is exact, so the
    victim's failure is the published failures minus the attackers' own (0)."""
    guess, _ = attack(K - 1, victim_fails, dp=None)
    assert guess is victim_fails


def _guessing_bound(epsilon: float, delta: float) -> float:
    """The best accuracy of any guess of one bit of one viewer from an (epsilon,
    delta)-DP release, with the bit a fair coin: e^eps / (1 + e^eps) + delta."""
    return math.exp(epsilon) / (1 + math.exp(epsilon)) + delta


@pytest.mark.parametrize("n_attackers", [K - 1, 200], ids=["k-1-attackers", "200-attackers"])
def test_k_minus_1_attack_in_dp_mode_does_no_better_than_epsilon_allows(n_attackers: int) -> None:
    """The same attack, 300 times against dp mode, the victim failing on a fair (seeded)
    coin. Bound checked: accuracy <= e^eps/(1+e^eps) + delta + 3 standard errors
    (sqrt(1/4 / 300) each), with eps and delta what the budget ledger charged the victim
    (never more than epsilon_per_day = 2: e^2/(1+e^2) = 0.881). With 4 attackers nothing
    is published (the noisy threshold), so the attacker can only toss a coin; with 200
    attackers the day row is published and its failures carry discrete Laplace noise."""
    coin = random.Random(13)
    trials = 300
    right = published = 0
    charged: list[float] = []
    for _ in range(trials):
        fails = coin.random() < 0.5
        guess, ledger = attack(n_attackers, fails, POLICY)
        published += guess is not None
        right += (guess if guess is not None else True) is fails
        day = ledger.budget.days()[0]
        charged.append(day.epsilon_spent)
        delta = day.delta_spent
    epsilon = max(charged)
    assert epsilon <= POLICY.epsilon_per_day
    bound = _guessing_bound(epsilon, delta) + 3 * math.sqrt(0.25 / trials)
    accuracy = right / trials
    assert accuracy <= bound, (accuracy, bound, epsilon)
    if n_attackers == K - 1:
        assert published == 0
    else:
        assert published > trials * 0.9  # the day row is there to attack


def test_one_viewers_hour_moves_the_noisy_playing_time_by_no_more_than_the_bound() -> None:
    """The sensitivity the noise is scaled to holds per viewer: 300 viewers of a day part
    play 0 ms each, and the victim plays 0 ms (world A) or a whole hour (world B). 400
    noisy releases of each: the mean difference must stay within the per-viewer bound
    (2 minutes) plus 4 standard errors of the difference of two means (2 x scale / 20). A
    clamp on the part's sum (n x bound) instead of on each viewer would let the hour through
    (3,600,000 ms against a bound of 1,200,000 ms with the errors)."""
    mech = mechanism(POLICY, "day", K)
    viewers = set(range(300))
    draws = 400

    def mean_playing(victim_ms: int) -> float:
        part = RowCell()
        part.viewers = viewers
        part.views = len(viewers)
        part.playing_ms = victim_ms
        amounts = {"views": dict.fromkeys(viewers, 1), "playing": {0: victim_ms}}
        got = [mech.noise(part, amounts) for _ in range(draws)]
        shown = [p.playing_ms for p in got if p is not None]
        assert len(shown) == draws  # 300 viewers pass the noisy threshold
        return sum(shown) / draws

    scale = mech.scales["playing_ms"]
    limit = BOUNDS["playing_ms"] + 4 * 2 * scale / math.sqrt(draws)
    moved = mean_playing(3_600_000) - mean_playing(0)
    assert moved < limit, f"one viewer's hour moved the mean by {moved:.0f} ms (limit {limit:.0f})"


# ---- noise --------------------------------------------------------------------------------------


def test_noise_on_many_released_cells_is_the_configured_discrete_laplace() -> None:
    """1,000 streams of 300 viewers, 1 view each: each day row is one noisy part (the hour's
    threshold, 494 above k-1, holds nearly all back; the day's, 166, lets them out). Its views
    minus 300 must follow the discrete Laplace of the day's views scale (2 / (0.6 * 2 / 6 *
    0.2) = 50): Kolmogorov-Smirnov distance below 1.95 / sqrt(n) (alpha = 0.001, and
    conservative for a discrete law); mean within 4 standard errors of 0; sample variance
    within 4 of its standard errors of 2q/(1-q)^2 (relative sd sqrt((kurtosis - 1) / n),
    kurtosis 6 for a Laplace)."""
    n_streams, n_viewers = 1000, 300
    streams = {
        f"s{i:03}": [(i * 1000 + v, 1, 10_000, 0) for v in range(n_viewers)]
        for i in range(n_streams)
    }
    _, rows = run_day([minute(streams)])
    # a stream whose hour part passed anyway (P ~ 0.3 % each) is in its day row through the
    # hour's part (scale 150): left out
    at_hour = {stream for gran, _, stream in rows if gran == "hour"}
    noise = sorted(
        int(r["views"]) - n_viewers
        for (gran, _, stream), r in rows.items()
        if gran == "day" and stream not in at_hour
    )
    assert len(noise) + len(at_hour) == n_streams
    assert len(at_hour) < 25
    scale = mechanism(POLICY, "day", K).scales["views"]
    assert scale == pytest.approx(50)
    n = len(noise)
    ks = max(
        max(
            abs((i + 1) / n - discrete_laplace_cdf(x, scale)),
            abs(i / n - discrete_laplace_cdf(x - 1, scale)),
        )
        for i, x in enumerate(noise)
    )
    assert ks < 1.95 / math.sqrt(n), ks
    q = math.exp(-1 / scale)
    variance = 2 * q / (1 - q) ** 2
    mean = sum(noise) / n
    assert abs(mean) < 4 * math.sqrt(variance / n)
    sample_var = sum((x - mean) ** 2 for x in noise) / (n - 1)
    assert sample_var == pytest.approx(variance, rel=4 * math.sqrt(5 / n))


def test_rows_are_sums_of_noisy_parts_drawn_once() -> None:
    """Reading the rows again gives the same numbers (noise is stored, not redrawn); the
    day equals its hours plus its own increments: here 2 hours of 1,000 viewers (released
    at the hour) and an hour of 300 (held to the day). 1,000 viewers pass the hour's noisy
    threshold (about 500) with overwhelming probability; 600 failed it about once in 15."""
    big = [(v, 1, 20_000, v % 50 == 0) for v in range(1000)]
    small = [(10_000 + v, 1, 20_000, 0) for v in range(300)]
    ms = [
        minute({"news": [(v, a, b, int(c)) for v, a, b, c in big]}, T0),
        minute({"news": [(v + 20_000, a, b, int(c)) for v, a, b, c in big]}, T0 + 3600),
        minute({"news": small}, T0 + 7200),
    ]
    ledger, rows = run_day(ms)
    hours = [r for (g, _, _), r in rows.items() if g == "hour"]
    day = rows[("day", T0, "news")]
    assert len(hours) == 2  # the third hour's 300 viewers did not pass the hour threshold
    assert day["views"] >= sum(h["views"] for h in hours)
    assert day["unique_viewers"] >= sum(h["unique_viewers"] for h in hours)
    # re-read: every group again, nothing redrawn
    again = {
        (g.granularity, int(g.window_start.timestamp()), r.key.stream): r.views
        for g in ledger.groups(changed_only=False, settle_open=True)
        for r in g.to_rows()
    }
    assert again == {key: r["views"] for key, r in rows.items() if key in again}
    assert not any(g == "minute" for g, _, _ in rows)  # dp accounts have no minute rows


# ---- the budget ---------------------------------------------------------------------------------


def test_budget_ledger_matches_opendp_composition() -> None:
    """The victim's day in the 200-attacker run: charged one hour part (not let out) and one
    day part. OpenDP's own composition of the same measurements, metric by metric, with
    each metric's bound as the distance in, must give the ledger's epsilon and delta."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    _, ledger = attack(200, True, POLICY)
    day = ledger.budget.days()[0]
    hour_m, day_m = mechanism(POLICY, "hour", K), mechanism(POLICY, "day", K)
    epsilon = 0.0
    for metric in ("views", "playing_ms", "failures"):
        both = dp.c.make_composition([hour_m.sums[metric], day_m.sums[metric]])
        epsilon += both.map(BOUNDS[metric])
    select = dp.c.make_composition([hour_m.select, day_m.select])
    eps_select, delta = select.map((1, 1, 1))
    assert day.epsilon_spent == pytest.approx(epsilon + eps_select, rel=1e-12)
    assert day.delta_spent == pytest.approx(delta, rel=1e-12)
    assert ledger.budget.spent_by(ACCOUNT, T0, 0) == pytest.approx(day.epsilon_spent)


def test_a_spent_day_releases_nothing_more() -> None:
    """The same 300 viewers in 8 streams: the day share (0.6 x 2 = 1.2) pays for 6 day
    parts of 0.2; the 7th and 8th stream are held back and never published, and the
    ledger says so."""
    viewers = list(range(300))
    streams = {f"s{i}": [(v, 1, 10_000, 0) for v in viewers] for i in range(8)}
    ledger, rows = run_day([minute(streams)])
    shown = sorted(stream for (g, _, stream) in rows if g == "day")
    assert shown == [f"s{i}" for i in range(6)]
    day = ledger.budget.days()[0]
    assert day.parts_held == 2
    assert day.as_json()["spent"] is False  # the hour share (0.8) was not all used
    hour_cost = mechanism(POLICY, "hour", K).cost()[0]
    assert day.epsilon_spent == pytest.approx(8 * hour_cost + 6 * 0.2)
