"""The typical error of dp mode: 95 % intervals of views, unique viewers and playing time.

    python -m benchmarks.dp_intervals [--epsilon 2.0] [--delta 1e-6] [--k 10]

For a stream total row with 20, 200 and 2,000 viewers, at the account's epsilon per
viewer-day: the probability that the row is published at all (the noisy threshold), and
the half-width of the 95 % interval of each metric, from the mechanism's own scales
(aggregator/release/noise.py). An hour row is one part; a day row here is one day part (viewers
the hours did not let out). Then the interval of a day row that holds released hour parts
too. Prints Markdown tables (docs/privacy.md).
"""

from __future__ import annotations

import argparse
import math

from aggregator.release.noise import (
    DEFAULT_DELTA,
    DEFAULT_EPSILON_PER_DAY,
    DpPolicy,
    interval95,
    mechanism,
    row_noise,
)

VIEWERS = (20, 200, 2000)


def passes(n: int, k: int, threshold: int, scale: float) -> float:
    """P[n - (k - 1) + DLap(scale) >= threshold] (0 below the k floor)."""
    if n < k:
        return 0.0
    need = threshold - (n - (k - 1))  # the noise must reach this
    q = math.exp(-1 / scale)
    if need <= 0:
        return 1 - q ** (-need + 1) / (1 + q)  # 1 - P[X <= need - 1]
    return q**need / (1 + q)


def table(epsilon: float, delta: float, k: int) -> str:
    policy = DpPolicy(epsilon, delta)
    lines = [
        "| window | viewers | published | views ± | unique viewers ± | playing time ± |",
        "|---|---|---|---|---|---|",
    ]
    for granularity in ("hour", "day"):
        m = mechanism(policy, granularity, k)
        views = interval95(m.scales["views"])
        uniques = interval95(m.scales["viewers"])
        playing = interval95(m.scales["playing_ms"]) / 60_000
        for n in VIEWERS:
            p = passes(n, k, m.threshold, m.scales["viewers"])
            lines.append(
                f"| {granularity} | {n:,} | {p:.0%} | {views:,.0f} | {uniques:,.0f} | "
                f"{playing:,.0f} min |"
            )
    return "\n".join(lines)


def day_with_hours(epsilon: float, delta: float, k: int) -> str:
    """The interval a day row shows when hours of it were released too (their noisy parts
    are in the day row): :func:`aggregator.release.noise.row_noise`, what the API and the dashboard
    show. A stream needs about the hour threshold (503 viewers at the defaults) in one hour."""
    policy = DpPolicy(epsilon, delta)
    lines = [
        "| day row holding | views ± | unique viewers ± | playing time ± |",
        "|---|---|---|---|",
    ]
    for parts in (0, 1, 2, 24):
        noise = row_noise(policy, k, "day", parts)
        lines.append(
            f"| {parts} hour part{'' if parts == 1 else 's'} | {noise['views']['ci95']:,.0f} | "
            f"{noise['unique_viewers']['ci95']:,.0f} | "
            f"{noise['playing_seconds']['ci95'] / 60:,.0f} min |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epsilon", type=float, default=DEFAULT_EPSILON_PER_DAY)
    parser.add_argument("--delta", type=float, default=DEFAULT_DELTA)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    policy = DpPolicy(args.epsilon, args.delta)
    for g in ("hour", "day"):
        m = mechanism(policy, g, args.k)
        eps, d = m.cost()
        print(
            f"{g}: epsilon per part {eps:.4f}, delta {d:.2e}, threshold "
            f"{m.threshold + args.k - 1} viewers, scales "
            + ", ".join(f"{name} {s:,.1f}" for name, s in m.scales.items())
        )
    print()
    print(table(args.epsilon, args.delta, args.k))
    print()
    print(day_with_hours(args.epsilon, args.delta, args.k))


if __name__ == "__main__":
    main()
