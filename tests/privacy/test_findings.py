"""The attacks that isolated one viewer before the release rewrite, each on its own.

Each builds the traffic of one finding of the release issue by hand, runs the counting and
release code the way the service does (tests/privacy/inprocess.py), and attacks what was
released. They all recovered a single viewer on the code before; the auditor's
property-based runs (test_differencing.py, test_service_audit.py) generalise them.
"""

from __future__ import annotations

import itertools

from tests.privacy.auditor import Auditor, Row, RowKey
from tests.privacy.inprocess import run
from tests.privacy.traffic import DE, FR, M0, T0, Session, make_session, spans


def crowd(first: int, n: int, minute: int, stream: str = "news", dims=DE) -> list[Session]:
    return [
        make_session(
            first + i, first + i, stream, M0 + minute, dims, "play", code="x", **spans(first + i)
        )
        for i in range(n)
    ]


def lone(n: int, minute: int, kind: str = "fail", code: str = "manifestLoadError") -> Session:
    return make_session(n, 100 + n, "news", M0 + minute, DE, kind, code=code, **spans(n))


def key(granularity: str, breakdown: str = "", value: str = "", stream: str = "news") -> RowKey:
    start = {"minute": 60, "hour": 3600, "day": 86400}[granularity]
    return (granularity, T0 - T0 % start, stream, breakdown, value)


def final(releases: list[dict[RowKey, Row]]) -> dict[RowKey, Row]:
    return releases[-1]


def test_coarse_minus_fine_gives_back_no_lone_viewer() -> None:
    """Finding 1: a crowd in minutes 1 and 3, one viewer alone (failing, with a code) in
    minute 2: the hour minus its published minutes must not be that viewer."""
    k = 4
    sessions = [*crowd(0, 5, 1), lone(50, 2), *crowd(10, 5, 3)]
    releases = run(sessions, k)
    rows = final(releases)
    hour = rows[key("hour")]
    minutes = [rows.get(("minute", T0 + 60 * m, "news", "", "")) for m in (1, 2, 3)]
    assert minutes[1] is None  # the lone minute is never shown
    shown = [m for m in minutes if m is not None]
    remainder = (
        hour.views - sum(m.views for m in shown),
        hour.failures - sum(m.failures for m in shown),
        hour.playing_ms - sum(m.playing_ms for m in shown),
    )
    assert remainder == (0, 0, 0), "the hour still carries the lone viewer's minute"
    assert "manifestLoadError" not in hour.codes
    assert not Auditor([s.atom for s in sessions], k).audit(releases)


def test_the_lone_minute_is_released_only_within_a_pool_of_k() -> None:
    """The remainder is not lost for good: k lone viewers in k different minutes of one
    hour form a pool of k, and the hour shows them (as one remainder of >= k viewers)."""
    k = 3
    sessions = [*crowd(0, 4, 1), lone(50, 2), lone(51, 7), lone(52, 12)]
    releases = run(sessions, k)
    rows = final(releases)
    assert rows[key("hour")].views == 4 + 3
    assert rows[key("hour")].failures == 3
    assert not Auditor([s.atom for s in sessions], k).audit(releases)


def test_one_version_minus_the_previous_is_never_one_viewer() -> None:
    """Finding 2: the open hour and day rows, read before and after a lone viewer's minute,
    do not move by that viewer."""
    k = 4
    sessions = [*crowd(0, 5, 1), lone(50, 2)]
    releases = run(sessions, k)
    versions = [r[key("hour")] for r in releases if key("hour") in r]
    for before, after in itertools.pairwise(versions):
        assert after.views - before.views in (0,) or after.views - before.views >= k
    assert not Auditor([s.atom for s in sessions], k).audit(releases)


def test_values_inside_a_big_cell_need_k_holders() -> None:
    """Finding 3: in a cell of five viewers, one viewer's failure code, one viewer's
    latency and a startup bucket of one are not shown."""
    k = 5
    sessions = [*crowd(0, 4, 1), lone(50, 1, code="3016")]
    releases = run(sessions, k)
    minute = final(releases)[("minute", T0 + 60, "news", "", "")]
    assert minute.unique_viewers == 5
    assert minute.failures == 0  # one failing viewer: fewer than k behind the count
    assert "3016" not in minute.codes  # which code it was: one viewer's
    assert not Auditor([s.atom for s in sessions], k).audit(releases)


def test_an_hours_peak_is_never_taken_from_a_hidden_minute() -> None:
    """Finding 6: in minute 2 five German viewers are hidden by complementary suppression
    (a lone US viewer would otherwise be the difference between the total and the shown
    countries); their concurrency (5) may not become the hour's German peak, which the
    published minutes put at 4."""
    k = 4
    US = (("country", "US"), *DE[1:])
    sessions = [
        *crowd(0, 4, 1),
        *crowd(10, 5, 2),
        *crowd(20, 5, 2, dims=FR),
        *crowd(30, 1, 2, dims=US),
    ]
    releases = run(sessions, k)
    rows = final(releases)
    assert ("minute", T0 + 120, "news", "country", "DE") not in rows  # hidden in minute 2
    assert rows[key("hour", "country", "DE")].peak == 4
    assert not Auditor([s.atom for s in sessions], k).audit(releases)


def test_an_hour_is_its_minutes_plus_its_released_remainders() -> None:
    """Finding 8, the structure that makes numbers agree: for every key, the hour is the
    sum of its published minutes plus a remainder that is zero or covers >= k viewers, and
    the day is the sum of its hours plus the same; nothing published ever shrinks."""
    k = 3
    sessions = [*crowd(0, 3, 1), lone(50, 2), lone(51, 30), *crowd(10, 3, 61, dims=FR)]
    releases = run(sessions, k)
    rows = final(releases)
    for (g, ws, s, b, v), row in rows.items():
        if g == "minute":
            continue
        finer = "minute" if g == "hour" else "hour"
        step, span = (60, 3600) if g == "hour" else (3600, 86400)
        parts = [rows.get((finer, t, s, b, v)) for t in range(ws, ws + span, step)]
        extra = row.views - sum(p.views for p in parts if p is not None)
        assert extra == 0 or extra >= k
    for before, after in itertools.pairwise(releases):
        for rk, row in before.items():
            assert after[rk].views >= row.views
