"""aggregator/release/sums.py: which sums of released cells are shown, and what is pooled."""

from __future__ import annotations

import pytest

from aggregator.counting.cells import RawCell
from aggregator.release.sums import ALL_SUMS, shown_sums, split

K = 3


def cell(failing: list[int], viewers: int = 10) -> RawCell:
    """A cell of ``viewers`` viewers of which ``failing`` failed once each."""
    c = RawCell()
    c.viewers = set(range(100, 100 + viewers)) | set(failing)
    c.failures = len(failing)
    if failing:
        c.hold("failures", dict.fromkeys(failing, 1))
    return c


@pytest.mark.parametrize(
    ("values", "forced", "shown_values"),
    [
        pytest.param({"DE": [1, 2, 3], "FR": [4, 5, 6]}, {}, {"DE", "FR"}, id="all-big"),
        pytest.param({"DE": [1, 2, 3], "FR": [4]}, {}, set(), id="one-small-hides-the-other"),
        pytest.param(
            {"DE": [1, 2, 3], "FR": [4, 5, 6, 7], "IT": [8]}, {}, {"FR"}, id="smallest-goes"
        ),
        pytest.param(
            {"DE": [1, 2, 3], "FR": [4, 5, 6]}, {"IT": [7]}, {"FR"}, id="held-whole-counts"
        ),
        pytest.param({"DE": [1, 2, 3], "FR": []}, {"IT": [4, 5, 6]}, {"DE"}, id="held-k-ok"),
    ],
)
def test_a_breakdown_holds_back_a_sum_of_0_or_at_least_k_viewers(
    values: dict[str, list[int]], forced: dict[str, list[int]], shown_values: set[str]
) -> None:
    everyone = [v for vs in (*values.values(), *forced.values()) for v in vs]
    cands = {("news", "", ""): cell(everyone)}
    cands |= {("news", "country", v): cell(vs) for v, vs in values.items()}
    held = {("news", "country", v): cell(vs) for v, vs in forced.items()}
    shown = shown_sums(cands, held, K)
    assert "failures" in shown[("news", "", "")]
    got = {v for (_, b, v), names in shown.items() if b and "failures" in names}
    assert got == shown_values
    # the attack: total minus the shown values is the failures of 0 or >= k viewers
    rest = len(everyone) - sum(len(values[v]) for v in got)
    assert not 0 < rest < K


def test_a_total_with_fewer_than_k_behind_a_sum_does_not_show_it() -> None:
    shown = shown_sums({("news", "", ""): cell([1])}, {}, K)
    assert "failures" not in shown[("news", "", "")]


def test_split_pools_a_hidden_sum_with_its_holders_but_never_concurrency() -> None:
    c = cell([1, 2])
    c.concurrent_peak = 10
    c.hold("concurrent", dict.fromkeys(range(100, 110), 1))
    part, rest = split(c, frozenset({"concurrent"}))
    assert (part.failures, part.concurrent_peak, len(part.viewers)) == (0, 10, 12)
    assert rest is not None
    assert rest.failures == 2
    assert rest.holders == {"failures": {1: 1, 2: 1}}
    part, rest = split(c, frozenset())
    assert part.concurrent_peak == 0
    assert rest is not None
    assert "concurrent" not in rest.holders
    part, rest = split(c, ALL_SUMS)
    assert (part.failures, rest) == (2, None)
