"""The release: what an account can ever see, built so that no difference isolates a viewer.

Privacy invariant 3 (docs/privacy.md): every number an account can obtain, every earlier
version of it, and every sum or difference of such numbers covers no viewer or >= k. The
:class:`Ledger` builds every published row by construction, from k-safe *parts* only:

- **Minutes are the base window.** A closed minute's raw cells go through
  :func:`aggregator.release.kanon.release`; what it publishes (after the values inside are screened,
  :mod:`aggregator.release.values`) are the minute's rows, written once. What it holds back goes
  into the *pool* of the minute's hour.
- **An hour row** is the sum of the published minute rows of its key plus the *increments*
  released from the hour's pool: each increment is the pool anonymised by the same rules
  (>= k viewers per cell, complementary suppression across breakdown values), and what it
  holds back stays in the pool. When the hour closes, its pool goes to the day's pool.
- **A day row** is the sum of its hours' rows plus the increments released from the day's
  pool. When the day closes, what its pool still holds is never published.

So ``hour - sum(its minutes)`` is a sum of increments and ``day - sum(its hours)`` likewise,
each covering >= k viewers; an open row changes between two versions only by newly
published minute rows or increments (an increment is released only when an open row is
about to be written, or when its window closes); breakdowns of a remainder are partitioned
with the same complementary rule as any other cell. Distinct viewers of a row are the
distinct viewers of the parts it includes; its concurrent peak is the busiest *published*
minute (increments carry none: a peak taken from hidden minutes would show them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from aggregator.counting.cells import GRANULARITIES, Group, RawCell, RowCell
from aggregator.release.budget import Budget
from aggregator.release.kanon import MIN_K, SUPPRESSED, Pool, release
from aggregator.release.noise import DpPolicy, mechanism
from aggregator.release.sums import counts_part, shown_sums, split
from aggregator.release.values import screen

__all__ = ["DpOf", "Ledger"]

# dp mode: the account's policy for the UTC day starting at the given unix second, or None
# (k mode). See aggregator/release/noise.py: each released part is noised once, here.
DpOf = Callable[[str, int], DpPolicy | None]

_SECONDS: Final = {"minute": 60, "hour": 3600, "day": 86400}
_COARSER: Final = {"minute": "hour", "hour": "day"}
SLICE_PARTS: Final = 50  # parts added between two yields of add_minute_steps (~2-3 ms)
_WindowKey = tuple[str, str, int]  # (granularity, account, start)
Key3 = tuple[str, str, str]


class Ledger:
    """Published rows of every account's open hours and days, and closed minutes to write."""

    def __init__(self, k_of: Callable[[str], int], dp_of: DpOf | None = None) -> None:
        self._k_of = k_of
        self._dp_of = dp_of
        self.budget = Budget()
        self._groups: dict[_WindowKey, Group] = {}
        self._pools: dict[_WindowKey, Pool] = {}

    def k(self, account_id: str) -> int:
        return max(MIN_K, self._k_of(account_id))

    # -- in: closed minutes ---------------------------------------------------------------------

    def add_minute(self, raw: Group) -> None:
        """Release a closed minute's raw cells; its hold-backs go to its hour's pool."""
        for _ in self.add_minute_steps(raw):
            pass

    def add_minute_steps(self, raw: Group, slice_parts: int = SLICE_PARTS) -> Iterator[None]:
        """:meth:`add_minute` in slices: yields after every ``slice_parts`` released parts,
        so that a flush on an event loop lets requests through (the minute's k-anonymity
        release itself runs at once; adding its parts to the minute, hour and day rows took
        up to ~30 ms in one piece for a benchmark minute). Only the flush, under its lock,
        touches the ledger between two slices."""
        k = self.k(raw.account_id)
        start = int(raw.window_start.timestamp())
        pool = Pool()
        for (stream, breakdown, value), cell in raw.cells.items():
            pool.blocks.setdefault(stream, {})[(breakdown, value)] = cell
        if self._dp(raw.account_id, start) is not None:
            # dp mode: no minute rows (a viewer-day budget cannot pay for minutes); the
            # minute goes to its hour's pool, released with noise when the hour closes.
            hour = self._window("hour", raw.account_id, start)
            self._window("day", raw.account_id, start)
            self._pool(hour).merge(pool)
            return
        published, held = release(pool, k, count=True)
        minute = self._group("minute", raw.account_id, start)
        minute.closed = minute.changed = True
        hour = self._window("hour", raw.account_id, start)
        day = self._window("day", raw.account_id, start)
        hour.changed = day.changed = True
        for n, (key, part) in enumerate(_parts(published, held, k), 1):
            minute.row(key).add(part)
            hour.row(key).add(part)
            day.row(key).add(part)
            if n % slice_parts == 0:
                yield
        self._pool(hour).merge(held)

    # -- time -----------------------------------------------------------------------------------

    def advance(self, boundary: float) -> None:
        """Every minute before ``boundary`` (unix seconds) is closed: hours, then days, that
        end at or before it are settled for the last time and closed."""
        for granularity in ("hour", "day"):
            for g in sorted(
                (g for g in self._groups.values() if g.granularity == granularity),
                key=lambda g: g.window_start,
            ):
                if not g.closed and g.window_end <= boundary:
                    self._settle(g, final=True)
                    g.closed = g.changed = True
                    left = self._pools.pop(self._key(g), None)
                    if left and granularity == "hour":
                        day = self._window("day", g.account_id, int(g.window_start.timestamp()))
                        self._pool(day).merge(left)
                        day.changed = True
                    elif left:
                        SUPPRESSED.labels("never_released").inc(left.viewers())

    # -- out: groups to write -------------------------------------------------------------------

    def groups(self, *, changed_only: bool = True, settle_open: bool = False) -> list[Group]:
        """Groups whose rows changed (or all): closed minutes, open or closed hours and days.
        ``settle_open``: release increments of open hours and days first (they are about to
        be written: a version changes only by k-safe parts)."""
        if settle_open:
            for granularity in ("hour", "day"):  # an hour's increment also goes into its day
                for g in list(self._groups.values()):
                    if not g.closed and g.granularity == granularity:
                        self._settle(g, final=False)
        out = [g for g in self._groups.values() if g.changed or not changed_only]
        order = {gran: i for i, gran in enumerate(GRANULARITIES)}
        out.sort(key=lambda g: (order[g.granularity], g.window_start, g.account_id))
        return out

    def written(self, groups: Sequence[Group]) -> None:
        """These groups were handed to the writer: unchanged from now; closed ones are
        forgotten (a closed group's viewer keys go with it)."""
        for g in groups:
            g.changed = False
            key = self._key(g)
            if g.closed and self._groups.get(key) is g:
                del self._groups[key]
                self._pools.pop(key, None)

    def forget_account(self, account_id: str) -> None:
        for key in [k for k in self._groups if k[1] == account_id]:
            del self._groups[key]
            self._pools.pop(key, None)

    def stats(self) -> dict[str, int]:
        return {
            "groups": len(self._groups),
            "rows": sum(len(g.rows) for g in self._groups.values()),
            "viewer_keys": sum(
                len(r.viewers) for g in self._groups.values() for r in g.rows.values()
            ),
            "pools": len(self._pools),
        }

    # -- internals ------------------------------------------------------------------------------

    def _settle(self, g: Group, *, final: bool) -> None:
        """Release an increment from the window's pool into its rows (and the day's)."""
        pool = self._pools.get(self._key(g))
        if not pool:
            return
        dp = self._dp(g.account_id, int(g.window_start.timestamp()))
        if dp is not None and not final:
            return  # dp mode: one release per window, when it closes
        k = self.k(g.account_id)
        published, held = release(pool, k)
        parts: dict[Key3, RowCell] = {}
        if dp is not None:  # values inside and held-back sums are not released in dp mode
            held.values = {}
            for key, cell in sorted(published.items()):
                noisy = self._noisy(dp, g, k, counts_part(cell), cell.holders)
                if noisy is None:
                    held.add_loose(key, cell)  # to the day's pool (or never, on the day)
                else:
                    parts[key] = noisy
        else:
            # what published rows held back (sums and values inside) is decided again,
            # together with this increment's cells of the same rows
            for key, rest in held.values.items():
                mine = published.get(key)
                if mine is None:
                    published[key] = rest
                else:
                    mine.add_sums(rest)
            held.values = {}
            last = final and g.granularity == "day"
            parts = dict(_parts(published, held, k, final=last))
        day = None
        if g.granularity == "hour":
            day = self._window("day", g.account_id, int(g.window_start.timestamp()))
        for key, part in sorted(parts.items()):
            if _empty(part):
                continue
            g.row(key).add(part, peak=False)
            if day is not None:
                day.row(key).add(part, peak=False)
                day.changed = True
            g.changed = True
        self._pools[self._key(g)] = held

    def _dp(self, account_id: str, start: int) -> DpPolicy | None:
        if self._dp_of is None:
            return None
        return self._dp_of(account_id, start - start % 86_400)

    def _noisy(
        self,
        dp: DpPolicy,
        g: Group,
        k: int,
        part: RowCell,
        amounts: Mapping[str, Mapping[int, int]],
    ) -> RowCell | None:
        """The part with noise, drawn once, if the viewer-day budget allows and the noisy
        threshold lets it out; None: held back (never released)."""
        mech = mechanism(dp, g.granularity, k)
        start = int(g.window_start.timestamp())
        if not self.budget.charge(
            g.account_id, start, g.granularity, part.viewers, mech.cost(), dp
        ):
            return None
        return mech.noise(part, amounts)

    def _group(self, granularity: str, account_id: str, start: int) -> Group:
        start -= start % _SECONDS[granularity]
        key = (granularity, account_id, start)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = Group(
                account_id,
                granularity,
                datetime.fromtimestamp(start, UTC),
                start + _SECONDS[granularity],
            )
            g.unique_step = self.k(account_id)
        return g

    def _window(self, granularity: str, account_id: str, start: int) -> Group:
        return self._group(granularity, account_id, start)

    def _pool(self, g: Group) -> Pool:
        key = self._key(g)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool()
        return pool

    @staticmethod
    def _key(g: Group) -> _WindowKey:
        return (g.granularity, g.account_id, int(g.window_start.timestamp()))


def _parts(
    published: dict[Key3, RawCell], held: Pool, k: int, *, final: bool = False
) -> list[tuple[Key3, RowCell]]:
    """The parts of released cells, each with the sums (:mod:`aggregator.release.sums`) and, on
    stream totals, the values inside (:mod:`aggregator.release.values`) that k viewers are behind;
    what they hold back goes to ``held.values`` under the row's key."""
    shown = shown_sums(published, held.loose, k)
    out: list[tuple[Key3, RowCell]] = []
    for key, cell in sorted(published.items()):
        part, rest = split(cell, shown[key])
        inside = screen(cell, part, k, final=final) if not key[1] else None  # totals only
        if inside is not None:
            if rest is None:
                rest = inside
            else:
                rest.add_sums(inside)
        if rest is not None:
            held.add_values(key, rest)
        out.append((key, part))
    return out


def _empty(part: RowCell) -> bool:
    return not (
        part.viewers
        or part.views
        or part.playing_ms
        or part.failures
        or part.exits_before_start
        or part.codes
        or any(part.startup_hist)
        or part.latency_count
        or part.bitrate_ms
    )
