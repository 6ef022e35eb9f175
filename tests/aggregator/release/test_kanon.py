"""k-anonymity (privacy invariant 3) with k = 3: what is published, generalised, held back."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from aggregator.counting.cells import COLUMNS, OTHER, CellRow, Group, row_values
from aggregator.counting.windows import Aggregator
from aggregator.release.ledger import Ledger
from collector.handover import Dimensions
from tests.aggregator.counting.test_sessions import T0, Player

K = 3
Member = tuple[int, str, Dimensions]  # (viewer, stream, dimensions): one session each


def minute_groups(members: Sequence[Member]) -> list[Group]:
    """Each member watches 10 s in minute 0; the minute's groups."""
    agg = Aggregator()
    for i, (viewer, stream, dims) in enumerate(members):
        p = Player(agg, session=i, viewer=viewer, stream=stream, dims=dims)
        p(1.0, sta="s")
        p(1.5, sta="p")
        p(11.5, sta="e")
    agg.end_all(T0 + 60)
    return agg.take_closed()


def anonymise(groups: Sequence[Group], k_of: Callable[[str], int]) -> list[CellRow]:
    """The published rows of closed minutes (the release's base window), with their exact
    distinct counts: these tests check the k decisions. Stored counts are rounded down to
    steps of k (tests/privacy/test_redteam.py attacks why)."""
    ledger = Ledger(k_of)
    for g in groups:
        ledger.add_minute(g)
    out = [g for g in ledger.groups() if g.granularity == "minute"]
    for g in out:
        g.unique_step = 1
    return [r for g in out for r in g.to_rows()]


def publish(members: Sequence[Member], k: int = K) -> dict[tuple[str, str, str], CellRow]:
    rows = anonymise(minute_groups(members), lambda _account: k)
    return {(r.key.stream, r.key.breakdown, r.key.value): r for r in rows}


def by_country(counts: dict[str, int], stream: str = "s1", first: int = 0) -> list[Member]:
    """``counts[country]`` viewers of ``stream`` from that country, viewer ids from ``first``."""
    out: list[Member] = []
    for country, n in counts.items():
        for _ in range(n):
            out.append((first + len(out), stream, Dimensions(country=country)))
    return out


def assert_k_anonymous(rows: Sequence[CellRow], k: int) -> None:
    """What a reader of the published rows could work out stays at >= k viewers.

    No account-wide total is published, so only breakdowns have a total to subtract from.
    """
    assert all(r.unique_viewers >= k for r in rows), "a published cell has fewer than k viewers"
    totals = {
        (r.key.granularity, r.key.window_start, r.key.stream): r
        for r in rows
        if not r.key.breakdown
    }
    parts: dict[tuple[tuple[str, datetime, str], str], list[CellRow]] = {}
    for r in rows:
        if r.key.breakdown:
            window = (r.key.granularity, r.key.window_start, r.key.stream)
            assert window in totals, "a breakdown published without its stream total"
            parts.setdefault((window, r.key.breakdown), []).append(r)
    for (window, _b), cells in parts.items():
        total = totals[window]
        remainder = total.unique_viewers - sum(c.unique_viewers for c in cells)
        assert not 0 < remainder < k, f"total minus published cells leaves {remainder} viewers"


def test_cells_with_fewer_than_k_viewers_never_appear() -> None:
    rows = publish(by_country({"DE": 5, "FR": 1, "IT": 2, "ES": 2}))
    assert_k_anonymous(list(rows.values()), K)
    countries = {v: r.unique_viewers for (s, b, v), r in rows.items() if b == "country"}
    assert countries == {"DE": 5, OTHER: 5}


def test_small_values_are_generalised_into_other_with_their_numbers_added() -> None:
    rows = publish(by_country({"DE": 4, "FR": 2, "IT": 1}))
    other = rows[("s1", "country", OTHER)]
    assert (other.unique_viewers, other.views, other.playing_seconds) == (3, 3, 30.0)
    assert rows[("s1", "country", "DE")].views == 4
    assert rows[("s1", "", "")].views == 7


def test_complementary_suppression_moves_the_smallest_published_value_into_other() -> None:
    # (other) would hold 1 viewer: the total minus DE and FR would reveal it
    rows = publish(by_country({"DE": 6, "FR": 3, "IT": 1}))
    countries = {v: r.unique_viewers for (s, b, v), r in rows.items() if b == "country"}
    assert countries == {"DE": 6, OTHER: 4}
    assert_k_anonymous(list(rows.values()), K)


def test_when_nothing_but_the_total_reaches_k_the_breakdown_is_one_other_cell() -> None:
    rows = publish(by_country({"DE": 2, "FR": 2}))
    countries = {v: r.unique_viewers for (s, b, v), r in rows.items() if b == "country"}
    assert countries == {OTHER: 4}


def test_an_account_below_k_publishes_nothing() -> None:
    assert publish(by_country({"DE": 1, "FR": 1})) == {}


@pytest.mark.parametrize("k", [pytest.param(0, id="k-0"), pytest.param(1, id="k-1")])
def test_k_is_never_below_two(k: int) -> None:
    rows = publish(by_country({"DE": 3, "FR": 1}), k=k)
    assert ("s1", "country", "FR") not in rows
    assert all(r.unique_viewers >= 2 for r in rows.values())


def test_a_value_literally_named_other_is_part_of_other() -> None:
    rows = publish(by_country({"DE": 3, OTHER: 3, "FR": 1}))
    countries = {v: r.unique_viewers for (s, b, v), r in rows.items() if b == "country"}
    assert countries == {"DE": 3, OTHER: 4}


# -- streams ----------------------------------------------------------------------------------


def test_small_streams_are_generalised_to_the_stream_other() -> None:
    members = by_country({"DE": 5}, "big")
    members += [(100 + i, f"tiny{i}", Dimensions(country="DE")) for i in range(3)]
    rows = publish(members)
    streams = {s: r.unique_viewers for (s, b, v), r in rows.items() if not b}
    assert streams == {"big": 5, OTHER: 3}
    assert rows[(OTHER, "country", "DE")].unique_viewers == 3


def test_a_lone_viewer_of_another_stream_does_not_hide_a_big_stream() -> None:
    # 5 watch "big", 1 other person alone watches "tiny": "tiny" is held back, "big" is
    # published; no account-wide total exists to subtract "big" from.
    members = [*by_country({"DE": 5}, "big"), (99, "tiny", Dimensions(country="DE"))]
    rows = publish(members)
    streams = {s: r.unique_viewers for (s, b, v), r in rows.items() if not b}
    assert streams == {"big": 5}
    assert_k_anonymous(list(rows.values()), K)


def test_a_small_stream_of_viewers_counted_elsewhere_is_simply_held_back() -> None:
    members = [*by_country({"DE": 5}, "big"), (0, "tiny", Dimensions(country="DE"))]
    rows = publish(members)
    assert {s for (s, b, v) in rows if not b} == {"big"}


# -- determinism, metric, columns -------------------------------------------------------------


def test_the_decision_is_deterministic_whatever_the_insertion_order() -> None:
    members = by_country({"DE": 5, "FR": 3, "IT": 3, "ES": 1, "PL": 1})
    a = anonymise(minute_groups(members), lambda _a: K)
    b = anonymise(minute_groups(list(reversed(members))), lambda _a: K)
    assert [row_values(r) for r in a] == [row_values(r) for r in b]
    # FR and IT tie at 3: the complementary rule moves one, chosen by name
    assert {r.key.value for r in a if r.key.breakdown == "country"} == {"DE", "IT", OTHER}


def _suppressed(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("streamtally_cells_suppressed_total", {"reason": reason}) or 0.0
    )


def test_held_back_cells_are_counted_by_reason() -> None:
    before = _suppressed("below_k"), _suppressed("complementary")
    publish(by_country({"DE": 6, "FR": 3, "IT": 1}))
    after = _suppressed("below_k"), _suppressed("complementary")
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)  # IT, then FR


def test_columns_match_the_cells_table_and_row_values() -> None:
    sql = (Path(__file__).parents[3] / "aggregator/storage/migrations/0002_cells.sql").read_text()
    body = sql[sql.index("(", sql.index("CREATE TABLE")) + 1 : sql.index("ENGINE")]
    table = [m.group(1) for m in re.finditer(r"^\s*(\w+)\s+\S", body, re.MULTILINE)]
    assert table == [*COLUMNS, "part", "retention_days", "version", "is_deleted"]
    rows = publish(by_country({"DE": 3}))
    values = row_values(rows[("s1", "country", "DE")])
    assert len(values) == len(COLUMNS)
    assert values[COLUMNS.index("unique_viewers")] == 3
    assert values[COLUMNS.index("value")] == "DE"
