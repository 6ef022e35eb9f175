"""Values inside a cell: shown only where at least k distinct viewers share them.

A published cell's sums (views, playing time, rebuffers, failures, exits, bitrate changes,
concurrency) are shown where >= k viewers contributed to each (:mod:`aggregator.release.sums`).
The values inside it are finer: which
error code a failure had, which startup bucket a view fell in, the average latency or
bitrate. One viewer's failure code in a cell of twenty still names what happened to that
viewer. So, for every part released (:mod:`aggregator.release.ledger`), :func:`screen` shows:

- an **error code** only if >= k distinct viewers had it in this part; on the last level
  (``final``, the day) the codes that never reached k are shown together as ``(other)`` if
  those viewers reach k;
- the **startup histogram** only if the part's startups come from >= k distinct viewers, and
  then coarsened: buckets are grouped left to right into runs that each hold >= k distinct
  viewers (a short last run joins the one before), and each run's count is shown in the
  bucket holding the run's median startup. Every shown bucket count covers >= k viewers;
- **latency** and **bitrate** only if >= k distinct viewers sent samples, and then as the
  average of each viewer's own average: every viewer weighs the same, so one who sends
  2,000 latency samples or watches for an hour cannot make the average their own
  (``latency_count`` counts viewers; ``bitrate_kbps_seconds`` is the time played at that
  average).

Values inside are shown on a stream's total rows only, never on its breakdown rows
(country, device, …): a breakdown's values, screened each on its own, would let the total
minus the shown values give back what one small value held (a lone viewer's error code or
latency). Breakdown rows carry the whole-cell counts.

What is not shown is *held*: it goes, with its holders, into the release pool of the
coarser window under the same row key, where it is screened again together with what the
other parts of that window held (:func:`screen` on the pooled values). A coarse row's
value is therefore the sum of the finer rows' shown values plus its own screened
remainder, and the difference between the two covers >= k viewers or none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from aggregator.counting.cells import OTHER, Held, RawCell, RowCell

__all__ = ["coarsen_startups", "screen"]

_NO_VIEWERS: Final[frozenset[int]] = frozenset()


def screen(cell: RawCell, part: RowCell, k: int, *, final: bool = False) -> RawCell | None:
    """Show in ``part`` the values of ``cell`` that >= k viewers share; return the rest
    (a cell holding only values inside, with their holders), or None if nothing is held."""
    held = RawCell()
    if cell.codes:
        _screen_codes(cell.codes, part, held, k, final)
    if cell.startups:
        if _union(h.viewers for h in cell.startups.values()) >= k:
            for bucket, count in coarsen_startups(cell.startups, k).items():
                part.startup_hist[bucket] += count
        else:
            held.startups = cell.startups
    lat = cell.latency
    if lat is not None and lat.weight:
        viewers = len(lat.viewers)
        if viewers >= k:  # each viewer's own average, weighing the same
            part.latency_ms_sum += round(lat.mean_sum())
            part.latency_count += viewers
        else:
            held.latency = lat
    br = cell.bitrate
    if br is not None and br.weight:
        viewers = len(br.viewers)
        if viewers >= k:  # the time played, at the average of the viewers' own averages
            weight = br.weight
            part.bitrate_kbps_ms += round(br.mean_sum() / viewers * weight)
            part.bitrate_ms += weight
        else:
            held.bitrate = br
    return held if held.has_values_inside() else None


def _screen_codes(
    codes: dict[str, Held], part: RowCell, held: RawCell, k: int, final: bool
) -> None:
    rest: dict[str, Held] = {}
    for code, h in codes.items():
        if len(h.viewers) >= k:
            part.codes[code] = part.codes.get(code, 0) + h.count
        else:
            rest[code] = h
    if not rest:
        return
    if final and _union(h.viewers for h in rest.values()) >= k:
        part.codes[OTHER] = part.codes.get(OTHER, 0) + sum(h.count for h in rest.values())
        return
    held.codes = rest


def coarsen_startups(startups: dict[int, Held], k: int) -> dict[int, int]:
    """Bucket -> count after grouping adjacent buckets into runs of >= k distinct viewers.

    Deterministic; the caller checks that all startups together have >= k viewers (else
    this returns the single run it can form, which the caller must not show)."""
    runs: list[tuple[list[tuple[int, int]], set[int]]] = []
    run: list[tuple[int, int]] = []
    viewers: set[int] = set()
    for bucket in sorted(startups):
        h = startups[bucket]
        if not h.count:
            continue
        run.append((bucket, h.count))
        viewers |= h.viewers
        if len(viewers) >= k:
            runs.append((run, viewers))
            run, viewers = [], set()
    if run:
        if runs:
            runs[-1][0].extend(run)
            runs[-1][1].update(viewers)
        else:
            runs.append((run, viewers))
    out: dict[int, int] = {}
    for members, _ in runs:
        total = sum(n for _, n in members)
        middle = (total + 1) // 2  # the median startup's rank within the run
        seen = 0
        for bucket, n in members:
            seen += n
            if seen >= middle:
                out[bucket] = out.get(bucket, 0) + total
                break
    return out


def _union(sets: Iterable[set[int] | frozenset[int]]) -> int:
    out: set[int] = set()
    for s in sets:
        out |= s
    return len(out)
