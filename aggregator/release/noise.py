"""Differential-privacy noise on released parts (accounts with ``privacy = dp``).

Every published row is a sum of released *parts* (:mod:`aggregator.release.ledger`). In dp mode
each part goes through :class:`Noiser` once, when it is released: its counts are clamped,
noise from OpenDP's exact samplers is added, the noisy part is what is added into the
rows, and the true part is forgotten. Rows are sums of noisy parts, so an hour agrees with
its minutes by construction and reading a row twice gives the same numbers.

Per part (one row key of one release step), with ``n`` its distinct viewers:

- **Partition selection** (OpenDP ``make_laplace_threshold``): the part is released only
  if ``n - (k - 1) + DLap(scale_viewers) >= threshold``. The k floor comes first (a part
  below k is never a candidate); the noisy count is the part's ``unique_viewers``.
- **Counts and sums** (OpenDP ``make_laplace`` on integers: the discrete Laplace):
  views, playing time (ms) and failures, each viewer's amount clamped to its per-viewer
  bound (:data:`BOUNDS`: 2 views, 2 minutes of playing, 1 failure per part), then noised
  with scale = bound / epsilon share.
- **Not released in dp mode (this version)**: rebuffers, exits before start, bitrate
  changes, concurrency, and the values inside a cell (error codes, startup histogram,
  latency, bitrate): they are zero in dp rows.

The epsilon of a part is ``epsilon_per_day * SHARES[granularity] / PARTS_PER_VIEWER[g]``,
split over the metrics by :data:`METRIC_SHARES`. What each part costs is what OpenDP's
privacy maps say (:meth:`PartMechanism.cost`); :mod:`aggregator.release.budget` adds them up
per viewer and stops releasing once a day is spent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from aggregator.counting.cells import RowCell

__all__ = [
    "BOUNDS",
    "CLAMPED",
    "DEFAULT_DELTA",
    "DEFAULT_EPSILON_PER_DAY",
    "METRIC_SHARES",
    "PARTS_PER_VIEWER",
    "SHARES",
    "DpPolicy",
    "NoisyPart",
    "PartMechanism",
    "interval95",
    "mechanism",
]

DEFAULT_EPSILON_PER_DAY: Final = 2.0
DEFAULT_DELTA: Final = 1e-6  # per part, for the threshold (partition selection)

# Share of a viewer-day's epsilon per granularity (the Census-style per-level split).
# Minutes get none: dp accounts have hour and day rows only.
SHARES: Final[dict[str, float]] = {"minute": 0.0, "hour": 0.4, "day": 0.6}
# Parts of a granularity one viewer is budgeted to appear in per day. A viewer is in one
# part per breakdown of a stream (stream total + 5 breakdowns = 6) when a window closes,
# so 12 hour parts are two hours of one stream, 6 day parts one stream's day. Past that,
# parts with that viewer are held back (an hour's go to the day's pool).
PARTS_PER_VIEWER: Final[dict[str, int]] = {"minute": 1, "hour": 12, "day": 6}
# How a part's epsilon is split over what it releases.
METRIC_SHARES: Final[dict[str, float]] = {
    "viewers": 0.4,
    "views": 0.2,
    "playing_ms": 0.2,
    "failures": 0.2,
}
# The sums released in dp mode and the holders (RawCell.holders) that say what each viewer
# added to them.
CLAMPED: Final[dict[str, str]] = {"views": "views", "playing_ms": "playing", "failures": "failures"}
# Per-viewer bound on each metric within one part: the sensitivity of that metric. A
# viewer's amount is clamped to it before noise (more views, or longer playing, of one
# viewer in one part are not counted).
BOUNDS: Final[dict[str, int]] = {
    "viewers": 1,
    "views": 2,
    "playing_ms": 120_000,  # two minutes of playing per viewer per part
    "failures": 1,
}


@dataclass(frozen=True, slots=True)
class DpPolicy:
    """An account's dp settings."""

    epsilon_per_day: float = DEFAULT_EPSILON_PER_DAY
    delta: float = DEFAULT_DELTA

    def epsilon_part(self, granularity: str) -> float:
        return self.epsilon_per_day * SHARES[granularity] / PARTS_PER_VIEWER[granularity]

    def scale(self, granularity: str, metric: str) -> float:
        """The noise scale of ``metric`` in one part of ``granularity``."""
        return BOUNDS[metric] / (self.epsilon_part(granularity) * METRIC_SHARES[metric])


@dataclass(frozen=True, slots=True)
class NoisyPart:
    """A part after noise (or None fields when it is not released)."""

    part: RowCell | None  # the noisy part, or None: held back by the threshold
    epsilon: float
    delta: float


def _dp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


class PartMechanism:
    """The OpenDP measurements of one (policy, granularity, k): built once, reused."""

    def __init__(self, policy: DpPolicy, granularity: str, k: int) -> None:
        dp = _dp()
        self.policy = policy
        self.granularity = granularity
        self.k = k
        self.scales = {m: policy.scale(granularity, m) for m in BOUNDS}
        space = dp.atom_domain(T=int), dp.absolute_distance(T=int)
        self.sums = {
            m: dp.m.make_laplace(*space, scale=self.scales[m]) for m in BOUNDS if m != "viewers"
        }
        s = self.scales["viewers"]
        # released if noisy (n - (k - 1)) >= threshold: P[a part of one viewer passes] <= delta
        self.threshold = math.ceil(1 + s * math.log(1 / (2 * policy.delta)))
        self.select = dp.m.make_laplace_threshold(
            dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=int)),
            dp.l01inf_distance(dp.absolute_distance(T=int)),
            scale=s,
            threshold=self.threshold,
        )

        eps, delta = self.select.map((1, 1, 1))
        for m, meas in self.sums.items():
            eps += meas.map(BOUNDS[m])
        self._cost = (float(eps), float(delta))

    def cost(self) -> tuple[float, float]:
        """(epsilon, delta) of one part for one viewer in it, from OpenDP's privacy maps:
        the threshold's map on a viewer changing one count by 1, plus each sum's map on
        its bound (basic composition: the epsilons add up)."""
        return self._cost

    def measurements(self) -> list[Any]:
        """The part's measurements (for checking the ledger against OpenDP's composition)."""
        return [self.select, *self.sums.values()]

    def noise(self, part: RowCell, amounts: Mapping[str, Mapping[int, int]]) -> RowCell | None:
        """The noisy part, or None if the threshold holds it back. Draws once.

        ``amounts``: per sum, what each viewer added to it (``RawCell.holders``); each
        viewer's amount is clamped to its bound before the sum is noised, so that no viewer
        moves a sum by more than the sensitivity the noise is scaled to."""
        n = len(part.viewers)
        if n < self.k:
            return None
        out = self.select({"n": n - (self.k - 1)})
        if "n" not in out:
            return None
        noisy = RowCell()
        noisy.viewers = set(part.viewers)  # the budget ledger's input; never stored
        noisy.dp_viewers = max(0, int(out["n"]) + self.k - 1)
        for metric, holder in CLAMPED.items():
            bound = BOUNDS[metric]
            clamped = sum(min(a, bound) for a in amounts.get(holder, {}).values())
            setattr(noisy, metric, max(0, int(self.sums[metric](clamped))))
        noisy.dp_parts = 1
        return noisy


@lru_cache(maxsize=256)
def mechanism(policy: DpPolicy, granularity: str, k: int) -> PartMechanism:
    return PartMechanism(policy, granularity, k)


def interval95(scale: float, parts: int = 1) -> float:
    """Half-width of the 95 % interval of the noise on a sum of ``parts`` parts, each with
    discrete Laplace noise of ``scale``: exact for one part (P[|X| > t] <= 5 %), the
    normal approximation (sd = sqrt(2 parts) scale) for more."""
    if parts <= 0:
        return 0.0
    if parts == 1:
        # discrete Laplace: P[|X| >= t] = 2 e^{-t/s} / (1 + e^{-1/s})
        q = math.exp(-1 / scale)
        t = math.ceil(-scale * math.log(0.05 * (1 + q) / 2))
        return float(max(0, t - 1))
    return 1.96 * math.sqrt(2 * parts) * scale


# What the stats API shows of each noisy metric: the row's field and the mechanism's metric.
SHOWN: Final[dict[str, tuple[str, float]]] = {
    "views": ("views", 1.0),
    "unique_viewers": ("viewers", 1.0),
    "playing_seconds": ("playing_ms", 1 / 1000),
    "failures": ("failures", 1.0),
}


def row_noise(policy: DpPolicy, k: int, granularity: str, hour_parts: int = 0) -> dict[str, Any]:
    """Per shown metric: the noise scale and the half-width of the 95 % interval of a row.

    An hour row is one part. A day row is its hours' parts (``hour_parts``: its hour rows)
    plus at most one day part: the interval is that of all of them (variances add, normal
    approximation), an upper bound when the day released no part of its own."""
    out: dict[str, Any] = {}
    for name, (metric, unit) in SHOWN.items():
        if granularity == "hour":
            s = mechanism(policy, "hour", k).scales[metric]
            ci = interval95(s)
        else:
            s = mechanism(policy, "day", k).scales[metric]
            hs = mechanism(policy, "hour", k).scales[metric]
            var = 2 * s * s + hour_parts * 2 * hs * hs
            ci = interval95(s) if hour_parts == 0 else 1.96 * math.sqrt(var)
        out[name] = {"scale": round(s * unit, 3), "ci95": round(ci * unit, 3)}
    return out
