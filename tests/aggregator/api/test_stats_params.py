"""Parameter parsing and shaping of the stats API (aggregator/api/stats.py), without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aggregator.api.stats import (
    METRICS,
    floor_time,
    hidden_summary,
    metric_values,
    parse_minutes,
    parse_stats_query,
    to_csv,
)
from aggregator.counting.histogram import BUCKETS
from collector.errors import BadRequest

NOW = datetime(2026, 11, 24, 10, 17, 42, tzinfo=UTC)
TEN = datetime(2026, 11, 24, 10, tzinfo=UTC)


def parse(**query: str) -> Any:
    return parse_stats_query(query, NOW)


def test_defaults_are_the_last_day_auto_json_every_metric() -> None:
    q = parse()
    assert q.end == NOW
    assert q.start == NOW - timedelta(days=1)
    assert (q.requested, q.granularity) == ("auto", "hour")
    assert q.fmt == "json"
    assert q.metrics == METRICS
    assert q.by == ()
    assert q.stream is None


@pytest.mark.parametrize(
    ("span", "granularity"),
    [
        pytest.param(timedelta(minutes=1), "minute", id="1m"),
        pytest.param(timedelta(hours=3), "minute", id="3h"),
        pytest.param(timedelta(hours=3, seconds=1), "hour", id="3h+1s"),
        pytest.param(timedelta(days=7), "hour", id="7d"),
        pytest.param(timedelta(days=7, seconds=1), "day", id="7d+1s"),
        pytest.param(timedelta(days=400), "day", id="400d"),
    ],
)
def test_auto_granularity(span: timedelta, granularity: str) -> None:
    q = parse(**{"from": (NOW - span).isoformat(), "to": NOW.isoformat()})
    assert q.granularity == granularity


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("2026-11-24T10:00:00Z", TEN, id="Z"),
        pytest.param("2026-11-24T10:00:00", TEN, id="naive-UTC"),
        pytest.param("2026-11-24T12:00:00+02:00", TEN, id="offset"),
        pytest.param("2026-11-24", TEN.replace(hour=0), id="date"),
    ],
)  # fmt: skip
def test_times_are_iso_8601_in_utc(raw: str, expected: datetime) -> None:
    assert parse(**{"to": raw, "from": "2026-11-23T00:00:00Z"}).end == expected


@pytest.mark.parametrize(
    ("granularity", "expected"),
    [
        ("minute", datetime(2026, 11, 24, 10, 17, tzinfo=UTC)),
        ("hour", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("day", datetime(2026, 11, 24, tzinfo=UTC)),
    ],
)
def test_the_first_window_holds_from(granularity: str, expected: datetime) -> None:
    assert floor_time(NOW, granularity) == expected
    q = parse(granularity=granularity, **{"from": NOW.isoformat(), "to": "2026-11-25"})
    assert q.first_window == expected


def test_lists_keep_order_and_drop_repeats_and_blanks() -> None:
    q = parse(by="os, country,,os", metrics="failures,views,failures")
    assert q.by == ("os", "country")
    assert q.metrics == ("failures", "views")


@pytest.mark.parametrize(
    ("query", "key"),
    [
        pytest.param({"granularity": "weekly"}, "granularity", id="granularity"),
        pytest.param({"format": "tsv"}, "format", id="format"),
        pytest.param({"by": "city"}, "by", id="by"),
        pytest.param({"metrics": "views,ssn"}, "metrics", id="metrics"),
        pytest.param({"from": "soon"}, "from", id="from"),
        pytest.param({"to": "2026-02-30"}, "to", id="to"),
        pytest.param({"to": "1969-12-31T00:00:00Z"}, "to", id="before-1970"),
        pytest.param({"from": "2026-11-24T11:00:00Z"}, "from", id="from-after-now"),
        pytest.param({"stream": "x" * 1025}, "stream", id="stream-too-long"),
        pytest.param(
            {"granularity": "minute", "from": "2026-11-01", "to": "2026-11-09"},
            "granularity",
            id="minutes-over-7-days",
        ),
        pytest.param(
            {"granularity": "hour", "from": "2025-01-01", "to": "2026-11-01"},
            "granularity",
            id="hours-over-400-days",
        ),
    ],
)
def test_bad_parameters_name_themselves(query: dict[str, str], key: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse(**query)
    assert err.value.extra["key"] == key
    assert err.value.status == 400


def test_an_unknown_value_is_named_but_not_echoed_at_length() -> None:
    with pytest.raises(BadRequest) as err:
        parse(metrics="x" * 5000)
    assert len(err.value.detail) < 600


@pytest.mark.parametrize(
    ("raw", "minutes"), [(None, 30), ("", 30), ("1", 1), ("180", 180), ("45", 45)]
)
def test_minutes(raw: str | None, minutes: int) -> None:
    assert parse_minutes(raw) == minutes


@pytest.mark.parametrize("raw", ["0", "181", "-1", "abc", "2.5", "1e3"])
def test_minutes_out_of_range(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_minutes(raw)


def summed(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "views": 0, "unique_viewers": 0, "playing_seconds": 0.0, "startup_hist": [0] * BUCKETS,
        "rebuffer_count": 0, "rebuffer_seconds": 0.0, "failures": 0, "failures_by_code": {},
        "exits_before_start": 0, "concurrent_peak": 0, "bitrate_kbps_seconds": 0.0,
        "bitrate_seconds": 0.0, "bitrate_changes": 0, "latency_ms_sum": 0.0, "latency_count": 0,
    }  # fmt: skip
    row.update(values)
    return row


def test_metric_values_derive_ratios_and_sort_codes() -> None:
    values = metric_values(
        summed(
            playing_seconds=90.0,
            rebuffer_seconds=10.0,
            failures_by_code={"b": 2, "a": 2, "c": 5, "z": 0},
            latency_ms_sum=900.0,
            latency_count=3,
            bitrate_kbps_seconds=6000.0,
            bitrate_seconds=2.0,
        )
    )
    assert tuple(values) == METRICS
    assert values["rebuffer_ratio"] == 0.1
    assert list(values["failures_by_code"].items()) == [("c", 5), ("a", 2), ("b", 2)]
    assert values["latency_ms_avg"] == 300.0
    assert values["bitrate_kbps_avg"] == 3000.0
    assert values["startup_ms_p50"] is None


def test_metric_values_without_denominators_are_none() -> None:
    values = metric_values(summed())
    assert values["rebuffer_ratio"] is None
    assert values["latency_ms_avg"] is None
    assert values["bitrate_kbps_avg"] is None


def test_only_rebuffering_is_a_ratio_of_one() -> None:
    assert metric_values(summed(rebuffer_seconds=5.0))["rebuffer_ratio"] == 1.0


def cellrow(window: int, stream: str, breakdown: str, value: str, uv: int) -> dict[str, Any]:
    return {
        "window_start": window,
        "stream": stream,
        "breakdown": breakdown,
        "value": value,
        "unique_viewers": uv,
    }


def test_hidden_summary_subtracts_published_values_from_each_total() -> None:
    rows = [
        cellrow(1, "s", "", "", 20),
        cellrow(1, "s", "country", "DE", 10),
        cellrow(1, "s", "country", "(other)", 4),
        cellrow(1, "t", "", "", 6),  # no country published for t in window 1
        cellrow(2, "s", "", "", 8),
        cellrow(2, "s", "country", "DE", 8),
        # a viewer with two players counts under both: the remainder is clamped at 0
        cellrow(2, "s", "player", "hls.js", 5),
        cellrow(2, "s", "player", "shaka", 5),
    ]
    hidden = hidden_summary(rows, ("country", "player"))
    assert hidden["by"]["country"] == {
        "viewers_not_in_breakdown": 6 + 6,
        "windows_with_hidden_viewers": 2,
        "windows_without_breakdown": 1,
    }
    assert hidden["by"]["player"] == {
        "viewers_not_in_breakdown": 20 + 6,
        "windows_with_hidden_viewers": 2,
        "windows_without_breakdown": 2,
    }
    assert hidden["viewers_not_in_breakdown"] == 12 + 26
    assert hidden["other_rows"] == 1


def test_hidden_summary_without_breakdowns_is_empty() -> None:
    hidden = hidden_summary([cellrow(1, "s", "", "", 20)], ())
    assert hidden["viewers_not_in_breakdown"] == 0
    assert hidden["by"] == {}
    assert "k" in hidden["note"]


def test_csv_quotes_and_leaves_missing_cells_empty() -> None:
    rows: list[dict[str, Any]] = [
        {"window_start": "w", "stream": 'live, "main"', "country": "DE", "views": 3},
        {"window_start": "w", "stream": "s", "device": "tv", "failures_by_code": {"E": 1}},
    ]
    text = to_csv(
        rows, ["window_start", "stream", "country", "device", "views", "failures_by_code"]
    )
    assert text.decode().split("\r\n") == [
        "window_start,stream,country,device,views,failures_by_code",
        'w,"live, ""main""",DE,,3,',
        'w,s,,tv,,"{""E"":1}"',
        "",
    ]
