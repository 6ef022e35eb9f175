"""The privacy budget of dp accounts: epsilon spent per viewer and per UTC day.

Unit of privacy: one viewer key for one UTC day. Every noisy part released
(:mod:`aggregator.release.noise`) costs each viewer in it what OpenDP's privacy maps give for that
part (:meth:`aggregator.release.noise.PartMechanism.cost`); costs add up (basic composition of pure
epsilon, and of the threshold's delta). A viewer's spend per granularity is capped at that
granularity's share of ``epsilon_per_day`` (:data:`aggregator.release.noise.SHARES`): a part one of
whose viewers would go past it is held back (never released), and so is every part of a day
whose whole budget is spent.

The day's *spent* epsilon is the largest spend of any viewer that day (the worst case over
the people in it): that is what :meth:`Budget.days` reports and what is stored, per account
and day, in the table ``privacy_budget``, with no viewer key. Viewer keys stay in memory
and are forgotten with the day (:meth:`Budget.forget_before`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from aggregator.release.noise import SHARES, DpPolicy

__all__ = ["Budget", "DaySpend"]

_DAY = 86_400


@dataclass(slots=True)
class DaySpend:
    """One account's budget for one UTC day (what is stored and served)."""

    account_id: str
    day: int  # unix seconds of the day's start
    epsilon_per_day: float
    delta_per_part: float
    epsilon_spent: float = 0.0
    delta_spent: float = 0.0
    parts_released: int = 0
    parts_held: int = 0
    changed: bool = True
    viewers: dict[int, dict[str, float]] = field(default_factory=dict)  # memory only
    deltas: dict[int, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "day": datetime.fromtimestamp(self.day, UTC).date().isoformat(),
            "epsilon_per_day": self.epsilon_per_day,
            "epsilon_spent": self.epsilon_spent,
            "delta_spent": self.delta_spent,
            "parts_released": self.parts_released,
            "parts_held": self.parts_held,
            "spent": self.epsilon_spent >= self.epsilon_per_day * (1 - 1e-9),
        }


class Budget:
    """Spends per (account, day), and per viewer inside each (in memory)."""

    def __init__(self) -> None:
        self._days: dict[tuple[str, int], DaySpend] = {}

    def charge(
        self,
        account_id: str,
        window_start: int,
        granularity: str,
        viewers: set[int],
        cost: tuple[float, float],
        policy: DpPolicy,
    ) -> bool:
        """Spend ``cost`` for every viewer of a part; False (nothing spent) if one of them
        would pass the granularity's share of the day, or the day's whole budget."""
        day = window_start - window_start % _DAY
        d = self._days.get((account_id, day))
        if d is None:
            d = self._days[(account_id, day)] = DaySpend(
                account_id, day, policy.epsilon_per_day, policy.delta
            )
        eps, delta = cost
        cap = policy.epsilon_per_day * SHARES[granularity] * (1 + 1e-9)
        whole = policy.epsilon_per_day * (1 + 1e-9)
        d.changed = True
        for v in viewers:
            spent = d.viewers.get(v)
            if spent is not None and (
                spent.get(granularity, 0.0) + eps > cap or sum(spent.values()) + eps > whole
            ):
                d.parts_held += 1
                return False
        for v in viewers:
            spent = d.viewers.setdefault(v, {})
            spent[granularity] = spent.get(granularity, 0.0) + eps
            total = sum(spent.values())
            d.deltas[v] = d.deltas.get(v, 0.0) + delta
            d.epsilon_spent = max(d.epsilon_spent, total)
            d.delta_spent = max(d.delta_spent, d.deltas[v])
        d.parts_released += 1
        return True

    def spent_by(self, account_id: str, day: int, viewer: int) -> float:
        d = self._days.get((account_id, day - day % _DAY))
        return sum(d.viewers.get(viewer, {}).values()) if d else 0.0

    def days(self, *, changed_only: bool = False) -> list[DaySpend]:
        return sorted(
            (d for d in self._days.values() if d.changed or not changed_only),
            key=lambda d: (d.account_id, d.day),
        )

    def written(self, days: list[DaySpend]) -> None:
        for d in days:
            d.changed = False

    def forget_before(self, boundary: float) -> None:
        """Days that ended before ``boundary``: their viewer keys go (totals stay until
        written)."""
        for key, d in list(self._days.items()):
            if d.day + _DAY <= boundary:
                d.viewers.clear()
                d.deltas.clear()
                if not d.changed:
                    del self._days[key]

    def forget_account(self, account_id: str) -> None:
        for key in [k for k in self._days if k[0] == account_id]:
            del self._days[key]
