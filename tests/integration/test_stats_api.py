"""GET /v1/stats, /v1/streams and /v1/realtime against the real ClickHouse HTTP server.

Most tests write known cells straight into the ``cells`` table (as the writer does: several
process runs as ``part``, versions, tombstones) so the numbers served can be checked exactly;
one test goes end to end from players' reports.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aggregator.api import audit
from aggregator.counting.cells import COLUMNS
from aggregator.counting.histogram import BUCKETS, bucket_of
from aggregator.service import SERVICE
from tests.integration.conftest import Running

TIMEOUT = pytest.mark.timeout(60)

NOW = datetime.now(UTC)
HOUR = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
DAY = HOUR.replace(hour=0)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def cell(
    account: str,
    window: datetime,
    *,
    stream: str = "live-1",
    granularity: str = "hour",
    breakdown: str = "",
    value: str = "",
    **metrics: Any,
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, 0)
    row.update(
        account_id=account,
        stream=stream,
        granularity=granularity,
        window_start=window.replace(tzinfo=None),
        breakdown=breakdown,
        value=value,
        startup_hist=[0] * BUCKETS,
        failures_by_code={},
        playing_seconds=0.0,
    )
    row.update(metrics)
    return row


async def put_cells(
    running: Running,
    rows: list[dict[str, Any]],
    *,
    part: str = "p1",
    version: int = 1,
    deleted: int = 0,
) -> None:
    """Insert cells as the writer would (one process run ``part``, one ``version``)."""
    columns = [*COLUMNS, "part", "retention_days", "version", "is_deleted"]
    values = [[*(r[c] for c in COLUMNS), part, 762, version, deleted] for r in rows]
    await running.app[SERVICE].store.insert("cells", values, columns)


async def get(
    running: Running, path: str, token: str | None, **params: str
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with running.http.get(running.url + path, params=params, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def ok_json(running: Running, path: str, token: str, **params: str) -> dict[str, Any]:
    status, _, body = await get(running, path, token, **params)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def hist(*startups_ms: float) -> list[int]:
    h = [0] * BUCKETS
    for ms in startups_ms:
        h[bucket_of(ms)] += 1
    return h


RANGE = {"from": iso(HOUR - timedelta(hours=2)), "to": iso(HOUR + timedelta(hours=3))}


# ---- /v1/stats: numbers -------------------------------------------------------------------


async def test_totals_add_up_the_parts_and_derive_every_metric(running: Running) -> None:
    acc = await running.create_account(k=3)
    a = acc["account_id"]
    await put_cells(
        running,
        [
            cell(a, HOUR, views=5, unique_viewers=4, playing_seconds=90.0, rebuffer_count=2,
                 rebuffer_seconds=10.0, failures=2, failures_by_code={"E1": 1, "E2": 1},
                 exits_before_start=1, bitrate_kbps_seconds=3000.0, bitrate_seconds=1.0,
                 bitrate_changes=3, latency_ms_sum=3000.0, latency_count=2, concurrent_peak=3,
                 startup_hist=hist(400, 400, 400)),
        ],
        part="run-a",
    )  # fmt: skip
    await put_cells(
        running,
        [
            cell(a, HOUR, views=3, unique_viewers=3, playing_seconds=10.0, failures=1,
                 failures_by_code={"E1": 1}, bitrate_kbps_seconds=1000.0, bitrate_seconds=1.0,
                 latency_ms_sum=1000.0, latency_count=2, concurrent_peak=2,
                 startup_hist=hist(400)),
        ],
        part="run-b",
    )  # fmt: skip
    body = await ok_json(running, "/v1/stats", acc["api_token"], granularity="hour", **RANGE)
    [row] = body["rows"]
    assert row["window_start"] == iso(HOUR)
    assert row["stream"] == "live-1"
    assert row["views"] == 8
    assert row["unique_viewers"] == 7
    assert row["playing_seconds"] == 100.0
    assert row["rebuffer_count"] == 2
    assert row["rebuffer_seconds"] == 10.0
    assert row["rebuffer_ratio"] == pytest.approx(10 / 110, abs=1e-6)
    assert row["failures"] == 3
    assert row["failures_by_code"] == {"E1": 2, "E2": 1}
    assert row["exits_before_start"] == 1
    assert row["concurrent_peak"] == 3  # the larger of the runs' peaks, not their sum
    assert row["bitrate_kbps_avg"] == 2000.0
    assert row["bitrate_changes"] == 3
    assert row["latency_ms_avg"] == 1000.0
    assert 330 <= row["startup_ms_p50"] <= 480  # within the bucket of 400 ms
    assert body["k"] == 3
    assert body["granularity"] == "hour"
    assert body["account_id"] == a


async def test_existing_row_shape_is_kept(running: Running) -> None:
    acc = await running.create_account()
    await put_cells(running, [cell(acc["account_id"], HOUR, views=2, unique_viewers=2)])
    body = await ok_json(running, "/v1/stats", acc["api_token"], granularity="hour", **RANGE)
    [row] = body["rows"]
    for key in (
        "window_start", "stream", "views", "unique_viewers", "playing_seconds", "startup_ms_p50",
        "startup_ms_p95", "rebuffer_count", "rebuffer_seconds", "failures",
        "exits_before_start", "concurrent_peak", "bitrate_kbps_avg",
    ):  # fmt: skip
        assert key in row
    assert row["startup_ms_p50"] is None  # no startups: no quantile
    assert row["rebuffer_ratio"] is None  # nothing played
    assert {"from", "to", "granularity", "k", "rows"} <= set(body)


async def test_a_deleted_cell_version_is_not_served(running: Running) -> None:
    acc = await running.create_account()
    a = acc["account_id"]
    await put_cells(running, [cell(a, HOUR, views=4, unique_viewers=4)], version=1)
    await put_cells(running, [cell(a, HOUR + timedelta(hours=1), views=9, unique_viewers=9)])
    await put_cells(running, [cell(a, HOUR, views=0, unique_viewers=0)], version=2, deleted=1)
    body = await ok_json(running, "/v1/stats", acc["api_token"], granularity="hour", **RANGE)
    assert [(r["window_start"], r["views"]) for r in body["rows"]] == [
        (iso(HOUR + timedelta(hours=1)), 9)
    ]


async def test_a_newer_version_replaces_the_older_one(running: Running) -> None:
    acc = await running.create_account()
    a = acc["account_id"]
    await put_cells(running, [cell(a, HOUR, views=4, unique_viewers=4)], version=1)
    await put_cells(running, [cell(a, HOUR, views=6, unique_viewers=5)], version=2)
    body = await ok_json(running, "/v1/stats", acc["api_token"], granularity="hour", **RANGE)
    assert [r["views"] for r in body["rows"]] == [6]


@pytest.mark.parametrize(
    ("span", "expected"),
    [
        pytest.param(timedelta(hours=3), "minute", id="3h-minute"),
        pytest.param(timedelta(hours=3, minutes=1), "hour", id="3h01-hour"),
        pytest.param(timedelta(days=7), "hour", id="7d-hour"),
        pytest.param(timedelta(days=8), "day", id="8d-day"),
    ],
)
async def test_auto_granularity_picks_by_range(
    running: Running, span: timedelta, expected: str
) -> None:
    acc = await running.create_account()
    a = acc["account_id"]
    minute = HOUR + timedelta(minutes=5)
    await put_cells(
        running,
        [
            cell(a, minute, granularity="minute", views=1, unique_viewers=2),
            cell(a, HOUR, granularity="hour", views=10, unique_viewers=2),
            cell(a, DAY, granularity="day", views=100, unique_viewers=2),
        ],
    )
    end = minute + timedelta(minutes=30)
    body = await ok_json(
        running, "/v1/stats", acc["api_token"], **{"from": iso(end - span), "to": iso(end)}
    )
    assert body["granularity"] == expected
    assert body["granularity_requested"] == "auto"
    views = {"minute": 1, "hour": 10, "day": 100}[expected]
    assert [r["views"] for r in body["rows"]] == [views]


async def test_the_window_holding_from_is_included(running: Running) -> None:
    acc = await running.create_account()
    await put_cells(running, [cell(acc["account_id"], HOUR, views=3, unique_viewers=2)])
    body = await ok_json(
        running,
        "/v1/stats",
        acc["api_token"],
        granularity="hour",
        **{"from": iso(HOUR + timedelta(minutes=30)), "to": iso(HOUR + timedelta(minutes=40))},
    )
    assert [r["window_start"] for r in body["rows"]] == [iso(HOUR)]
    # ... and a window starting at `to` is not
    body = await ok_json(
        running,
        "/v1/stats",
        acc["api_token"],
        granularity="hour",
        **{"from": iso(HOUR - timedelta(hours=2)), "to": iso(HOUR)},
    )
    assert body["rows"] == []


async def test_stream_filter(running: Running) -> None:
    acc = await running.create_account()
    a = acc["account_id"]
    await put_cells(
        running,
        [
            cell(a, HOUR, stream="live-1", views=3, unique_viewers=2),
            cell(a, HOUR, stream="vod-9", views=7, unique_viewers=2),
        ],
    )
    every = await ok_json(running, "/v1/stats", acc["api_token"], granularity="hour", **RANGE)
    assert sorted(r["stream"] for r in every["rows"]) == ["live-1", "vod-9"]
    one = await ok_json(
        running, "/v1/stats", acc["api_token"], granularity="hour", stream="vod-9", **RANGE
    )
    assert [(r["stream"], r["views"]) for r in one["rows"]] == [("vod-9", 7)]
    assert one["stream"] == "vod-9"


async def test_metrics_choice_limits_each_row(running: Running) -> None:
    acc = await running.create_account()
    await put_cells(running, [cell(acc["account_id"], HOUR, views=3, unique_viewers=2)])
    body = await ok_json(
        running,
        "/v1/stats",
        acc["api_token"],
        granularity="hour",
        metrics="views, rebuffer_ratio,views",
        **RANGE,
    )
    assert body["metrics"] == ["views", "rebuffer_ratio"]
    assert [set(r) for r in body["rows"]] == [{"window_start", "stream", "views", "rebuffer_ratio"}]


# ---- /v1/stats: breakdowns and what is hidden ----------------------------------------------


async def breakdown_fixture(running: Running) -> tuple[dict[str, Any], str]:
    acc = await running.create_account(k=5)
    a = acc["account_id"]
    later = HOUR + timedelta(hours=1)
    await put_cells(
        running,
        [
            cell(a, HOUR, views=40, unique_viewers=30),
            cell(a, HOUR, breakdown="country", value="DE", views=15, unique_viewers=12),
            cell(a, HOUR, breakdown="country", value="FR", views=12, unique_viewers=10),
            # 8 viewers of the hour are in no published country (0 or >= k by construction)
            # and no device reached k: the device breakdown is suppressed for this hour
            cell(a, later, views=9, unique_viewers=7),
            cell(a, later, breakdown="country", value="DE", views=4, unique_viewers=7),
            cell(a, later, breakdown="device", value="desktop", views=5, unique_viewers=7),
        ],
    )
    return acc, a


async def test_each_breakdown_gives_its_own_rows(running: Running) -> None:
    acc, _ = await breakdown_fixture(running)
    body = await ok_json(
        running, "/v1/stats", acc["api_token"], granularity="hour", by="country,device", **RANGE
    )
    assert body["by"] == ["country", "device"]
    got = [(r["window_start"], r.get("country"), r.get("device"), r["views"]) for r in body["rows"]]
    later = iso(HOUR + timedelta(hours=1))
    assert got == [
        (iso(HOUR), "DE", None, 15),
        (iso(HOUR), "FR", None, 12),
        (later, "DE", None, 4),
        (later, None, "desktop", 5),
    ]


async def test_hidden_viewers_are_counted_per_breakdown(running: Running) -> None:
    acc, _ = await breakdown_fixture(running)
    body = await ok_json(
        running, "/v1/stats", acc["api_token"], granularity="hour", by="country,device", **RANGE
    )
    hidden = body["hidden"]
    assert hidden["by"]["country"] == {
        "viewers_not_in_breakdown": 8,
        "windows_with_hidden_viewers": 1,
        "windows_without_breakdown": 0,
    }
    assert hidden["by"]["device"] == {
        "viewers_not_in_breakdown": 30,
        "windows_with_hidden_viewers": 1,
        "windows_without_breakdown": 1,
    }
    assert hidden["viewers_not_in_breakdown"] == 38
    assert "k" in hidden["note"]
    assert "hidden" in hidden["note"] or "never stored" in hidden["note"]


async def test_hidden_counts_are_reported_without_breakdowns_too(running: Running) -> None:
    acc, _ = await breakdown_fixture(running)
    body = await ok_json(running, "/v1/stats", acc["api_token"], granularity="hour", **RANGE)
    assert body["hidden"]["viewers_not_in_breakdown"] == 0
    assert body["hidden"]["by"] == {}
    assert [r["views"] for r in body["rows"]] == [40, 9]


async def test_csv_has_a_header_and_the_dimension_columns(running: Running) -> None:
    acc, _ = await breakdown_fixture(running)
    status, headers, raw = await get(
        running,
        "/v1/stats",
        acc["api_token"],
        granularity="hour",
        by="country,device",
        metrics="views,unique_viewers,failures_by_code,rebuffer_ratio",
        format="csv",
        **RANGE,
    )
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["StreamTally-Viewers-Not-In-Breakdown"] == "38"
    assert headers["StreamTally-K"] == "5"
    table = list(csv.reader(io.StringIO(raw.decode())))
    assert table[0] == [
        "window_start", "stream", "country", "device",
        "views", "unique_viewers", "failures_by_code", "rebuffer_ratio",
    ]  # fmt: skip
    assert table[1] == [iso(HOUR), "live-1", "DE", "", "15", "12", "{}", ""]
    assert table[4] == [iso(HOUR + timedelta(hours=1)), "live-1", "", "desktop", "5", "7", "{}", ""]
    assert len(table) == 5


async def test_csv_of_totals(running: Running) -> None:
    acc = await running.create_account()
    await put_cells(
        running,
        [cell(acc["account_id"], HOUR, views=3, unique_viewers=2, failures_by_code={"E9": 2})],
    )
    status, _, raw = await get(
        running, "/v1/stats", acc["api_token"], granularity="hour", format="csv", **RANGE
    )
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert len(rows) == 1
    assert rows[0]["views"] == "3"
    assert json.loads(rows[0]["failures_by_code"]) == {"E9": 2}
    assert "country" not in rows[0]


# ---- /v1/stats: errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key"),
    [
        pytest.param({"from": "yesterday"}, "from", id="bad-from"),
        pytest.param({"to": "2026-13-45T00:00:00Z"}, "to", id="bad-to"),
        pytest.param({"from": "0001-01-01T00:00:00Z"}, "from", id="from-before-1970"),
        pytest.param({"to": "9999-12-31T23:59:59Z"}, "to", id="to-far-future"),
        pytest.param({"granularity": "week"}, "granularity", id="bad-granularity"),
        pytest.param({"metrics": "views,watch_time"}, "metrics", id="unknown-metric"),
        pytest.param({"by": "country,planet"}, "by", id="unknown-dimension"),
        pytest.param({"format": "xml"}, "format", id="bad-format"),
        pytest.param({"from": "2026-11-02", "to": "2026-11-01"}, "from", id="from-after-to"),
        pytest.param({"from": "2026-11-01", "to": "2026-11-01"}, "from", id="empty-range"),
        pytest.param(
            {"from": "2026-11-01T00:00:00Z", "to": "2026-11-09T00:00:00Z", "granularity": "minute"},
            "granularity",
            id="range-too-long",
        ),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    running: Running, params: dict[str, str], key: str
) -> None:
    acc = await running.create_account()
    status, headers, raw = await get(running, "/v1/stats", acc["api_token"], **params)
    assert status == 400
    assert headers["Content-Type"].startswith("application/problem+json")
    problem = json.loads(raw)
    assert problem["key"] == key
    assert key in problem["detail"]


@pytest.mark.parametrize("path", ["/v1/stats", "/v1/streams", "/v1/realtime"])
@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="missing"),
        pytest.param("st_not-a-real-token-000000000000", id="invalid"),
        pytest.param("test-admin-token-0123456789", id="admin-token"),
    ],
)
async def test_without_a_valid_api_token_401(
    running: Running, path: str, token: str | None
) -> None:
    await running.create_account()
    status, headers, raw = await get(running, path, token)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(raw)["status"] == 401


async def test_a_stats_read_is_audited(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []

    async def record(request: Any, account_id: str, action: str, summary: dict[str, Any]) -> None:
        calls.append((account_id, action, summary))

    acc = await running.create_account()
    monkeypatch.setattr(audit, "record", record)
    await ok_json(running, "/v1/stats", acc["api_token"], by="country", metrics="views", **RANGE)
    await ok_json(running, "/v1/streams", acc["api_token"])
    await ok_json(running, "/v1/realtime", acc["api_token"], minutes="5")
    assert [(c[0], c[1]) for c in calls] == [
        (acc["account_id"], "stats.read"),
        (acc["account_id"], "streams.read"),
        (acc["account_id"], "realtime.read"),
    ]
    summary = calls[0][2]
    assert summary["by"] == ["country"]
    assert summary["metrics"] == ["views"]
    assert summary["from"] == RANGE["from"]
    assert calls[2][2]["minutes"] == 5


# ---- /v1/streams ---------------------------------------------------------------------------


async def test_streams_with_totals_over_the_range(running: Running) -> None:
    acc = await running.create_account()
    a = acc["account_id"]
    d1, d2 = DAY - timedelta(days=3), DAY - timedelta(days=1)
    await put_cells(
        running,
        [
            cell(a, d1, granularity="day", stream="vod-9", views=5, unique_viewers=4, failures=1),
            cell(a, d2, granularity="day", stream="vod-9", views=6, unique_viewers=5),
            cell(a, d2, granularity="day", stream="live-1", views=50, unique_viewers=20),
            cell(a, d2, granularity="day", stream="live-1", breakdown="country", value="DE",
                 views=50, unique_viewers=20),
            cell(a, DAY - timedelta(days=45), granularity="day", stream="old", views=1,
                 unique_viewers=2),
            cell(a, d2, granularity="hour", stream="hourly-only", views=1, unique_viewers=2),
        ],
    )  # fmt: skip
    body = await ok_json(running, "/v1/streams", acc["api_token"])
    assert body["granularity"] == "day"
    assert "upper bound" in body["note"]
    assert body["streams"] == [
        {
            "stream": "live-1",
            "views": 50,
            "unique_viewers": 20,
            "playing_seconds": 0.0,
            "failures": 0,
            "days": 1,
            "first_window_start": iso(d2),
            "last_window_start": iso(d2),
        },
        {
            "stream": "vod-9",
            "views": 11,
            "unique_viewers": 9,
            "playing_seconds": 0.0,
            "failures": 1,
            "days": 2,
            "first_window_start": iso(d1),
            "last_window_start": iso(d2),
        },
    ]
    longer = await ok_json(
        running, "/v1/streams", acc["api_token"], **{"from": iso(DAY - timedelta(days=60))}
    )
    assert [s["stream"] for s in longer["streams"]] == ["live-1", "vod-9", "old"]


@pytest.mark.parametrize(
    ("params", "key"),
    [
        pytest.param({"from": "nope"}, "from", id="bad-from"),
        pytest.param({"to": "2026-11-01", "from": "2026-11-02"}, "from", id="from-after-to"),
        pytest.param({"from": "1971-01-01", "to": "2099-01-01"}, "from", id="range-too-long"),
    ],
)
async def test_streams_bad_parameters(running: Running, params: dict[str, str], key: str) -> None:
    acc = await running.create_account()
    status, _, raw = await get(running, "/v1/streams", acc["api_token"], **params)
    assert status == 400
    assert json.loads(raw)["key"] == key


# ---- /v1/realtime --------------------------------------------------------------------------


async def test_realtime_series_of_the_last_minutes(running: Running) -> None:
    acc = await running.create_account()
    a = acc["account_id"]
    this_minute = datetime.now(UTC).replace(second=0, microsecond=0)
    two_ago = this_minute - timedelta(minutes=2)
    await put_cells(
        running,
        [
            cell(a, two_ago, granularity="minute", stream="s1", concurrent_peak=4, failures=1,
                 views=3, unique_viewers=4),
            cell(a, two_ago, granularity="minute", stream="s2", concurrent_peak=3, failures=0,
                 views=2, unique_viewers=3),
            cell(a, two_ago, granularity="minute", stream="s1", breakdown="country", value="DE",
                 concurrent_peak=4, unique_viewers=4),
            cell(a, this_minute - timedelta(minutes=40), granularity="minute", stream="s1",
                 concurrent_peak=9, unique_viewers=9),
        ],
    )  # fmt: skip
    body = await ok_json(running, "/v1/realtime", acc["api_token"])
    if body["series"][-1]["window_start"] != iso(this_minute):  # the minute turned meanwhile
        body = await ok_json(running, "/v1/realtime", acc["api_token"])
    series = body["series"]
    assert body["minutes"] == 30
    assert len(series) == 30
    by_minute = {p["window_start"]: p for p in series}
    assert by_minute[iso(two_ago)]["concurrent_viewers"] in (7,)
    assert by_minute[iso(two_ago)]["failures"] == 1
    assert by_minute[iso(two_ago)]["views"] == 5
    others = [p for p in series if p["window_start"] != iso(two_ago)]
    assert all(p["concurrent_viewers"] is None for p in others)
    assert body["latest_window_start"] == iso(two_ago)
    assert "k" in body["note"]
    one = await ok_json(running, "/v1/realtime", acc["api_token"], minutes="60", stream="s2")
    assert len(one["series"]) == 60
    assert [p["concurrent_viewers"] for p in one["series"] if p["concurrent_viewers"]] == [3]


@pytest.mark.parametrize("minutes", ["0", "181", "ten", "-5", "1.5"])
async def test_realtime_minutes_out_of_bounds(running: Running, minutes: str) -> None:
    acc = await running.create_account()
    status, _, raw = await get(running, "/v1/realtime", acc["api_token"], minutes=minutes)
    assert status == 400
    assert json.loads(raw)["key"] == "minutes"


# ---- cross-tenant --------------------------------------------------------------------------


async def test_a_token_never_sees_another_accounts_rows(running: Running) -> None:
    acc_a = await running.create_account("a")
    acc_b = await running.create_account("b")
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    for acc, stream in ((acc_a, "a-stream"), (acc_b, "b-secret-stream")):
        rows = [
            cell(acc["account_id"], w, granularity=g, stream=stream, views=3, unique_viewers=2,
                 concurrent_peak=2)
            for g, w in (("minute", minute), ("hour", HOUR), ("day", DAY))
        ]  # fmt: skip
        await put_cells(running, rows)
    token = acc_a["api_token"]
    stats = await ok_json(running, "/v1/stats", token, granularity="hour", **RANGE)
    assert {r["stream"] for r in stats["rows"]} == {"a-stream"}
    named = await ok_json(
        running, "/v1/stats", token, granularity="hour", stream="b-secret-stream", **RANGE
    )
    assert named["rows"] == []
    streams = await ok_json(running, "/v1/streams", token)
    assert [s["stream"] for s in streams["streams"]] == ["a-stream"]
    realtime = await ok_json(running, "/v1/realtime", token, stream="b-secret-stream")
    assert all(p["concurrent_viewers"] is None for p in realtime["series"])
    realtime = await ok_json(running, "/v1/realtime", token)
    assert sum(p["concurrent_viewers"] or 0 for p in realtime["series"]) == 2
    # the account id in the answer is always the token's own
    assert {stats["account_id"], streams["account_id"], realtime["account_id"]} == {
        acc_a["account_id"]
    }


# ---- end to end ----------------------------------------------------------------------------


def report(sid: str, sn: int, sta: str, ts_ms: int, cid: str = "e2e") -> str:
    return f'cid="{cid}",e=ps,sid="{sid}",sn={sn},sta={sta},ts={ts_ms},v=2\n'


@TIMEOUT
async def test_players_reports_show_up_in_stats_streams_and_realtime(running: Running) -> None:
    acc = await running.create_account(k=2)
    ts = int(datetime.now(UTC).timestamp() * 1000)
    for i in range(4):
        body = report(f"s-{i}", 0, "s", ts) + report(f"s-{i}", 1, "p", ts + 800)
        resp = await running.post(acc["embed_key"], body, ip=f"198.51.100.{i + 10}")
        assert resp.status == 204
    await running.flush()
    token = acc["api_token"]
    now = datetime.now(UTC)
    stats = await ok_json(
        running,
        "/v1/stats",
        token,
        stream="e2e",
        granularity="minute",
        **{"from": iso(now - timedelta(minutes=5)), "to": iso(now + timedelta(minutes=1))},
    )
    assert sum(r["views"] for r in stats["rows"]) == 4
    assert max(r["unique_viewers"] for r in stats["rows"]) == 4
    streams = await ok_json(running, "/v1/streams", token)
    assert [(s["stream"], s["views"]) for s in streams["streams"]] == [("e2e", 4)]
    realtime = await ok_json(running, "/v1/realtime", token, minutes="5")
    assert max(p["views"] or 0 for p in realtime["series"]) == 4
