"""Reports in, numbers out: scripted sessions through the real server into the real
ClickHouse, read back through GET /v1/stats in every granularity."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
import pytest

from aggregator.counting.histogram import EDGES_MS, bucket_of
from aggregator.service import SERVICE
from collector.handover import Dimensions, Event
from tests.integration.conftest import Running

T = 1795480000000
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1"
)
ANDROID = (
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Mobile Safari/537.36"
)
FIREFOX_WIN = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0"


def ev(sid: str, sn: int, ms: int, e: str = "ps", **keys: Any) -> str:
    parts = {"cid": '"stream-42"', "e": e, "sid": f'"{sid}"', "sn": str(sn), "ts": str(T + ms)}
    for k, v in keys.items():
        parts[k] = f"({v})" if k in ("br", "ec") else str(v)
    parts["v"] = "2"
    return ",".join(f"{k}={v}" for k, v in sorted(parts.items())) + "\n"


# Every viewer's script runs twice, from two addresses of the same country: each metric
# then has two viewers behind it (k = 2), as a sum needs to be shown (aggregator/release/sums.py).


def a_events(sid: str) -> list[str]:
    """Viewer A, US desktop: starts in 1.5 s, plays 60 s, switches 3000 -> 1500 kbps half way."""
    return [
        ev(sid, 0, 0, sta="s"),
        ev(sid, 1, 1500, sta="p", br=3000),
        ev(sid, 2, 11500, "t", sta="p", br=3000),
        ev(sid, 3, 21500, "t", sta="p", br=3000),
        ev(sid, 4, 31500, "bc", sta="p", br=1500),
        ev(sid, 5, 41500, "t", sta="p", br=1500),
        ev(sid, 6, 61500, sta="e", br=1500),
    ]


def b_events(sid: str) -> list[str]:
    """Viewer B, US mobile: starts in 0.8 s, plays 20 s, stalls 5 s, plays 15 s more."""
    return [
        ev(sid, 0, 0, sta="s"),
        ev(sid, 1, 800, sta="p", br=2000),
        ev(sid, 2, 10800, "t", sta="p", br=2000),
        ev(sid, 3, 20800, sta="r", br=2000),
        ev(sid, 4, 25800, sta="p", br=2000),
        ev(sid, 5, 35800, "t", sta="p", br=2000),
        ev(sid, 6, 40800, sta="e", br=2000),
    ]


def c_events(sid: str) -> list[str]:
    """Viewer C, NL mobile: the manifest fails before anything plays."""
    return [
        ev(sid, 0, 0, sta="s"),
        ev(sid, 1, 300, sta="f"),
        ev(sid, 2, 310, "e", sta="f", ec='"manifestLoadError"'),
    ]


def d_events(sid: str) -> list[str]:
    """Viewer D, NL desktop: player-reported startup 1 s, plays 30 s; two events re-sent late."""
    d = [
        ev(sid, 0, 0, sta="s"),
        ev(sid, 1, 1000, sta="p", msd=1000),
        ev(sid, 2, 11000, "t", sta="p"),
        ev(sid, 3, 21000, "t", sta="p"),
        ev(sid, 4, 31000, sta="e"),
    ]
    return [d[0], d[1], d[2], d[1], d[3], d[4], d[2]]


VIEWERS: Sequence[tuple[str, str, list[str]]] = (
    ("8.8.8.8", CHROME_LINUX, a_events("a")),
    ("8.8.8.9", CHROME_LINUX, a_events("a2")),
    ("8.8.4.4", IPHONE, b_events("b")),
    ("8.8.4.5", IPHONE, b_events("b2")),
    ("193.0.0.1", ANDROID, c_events("c")),
    ("193.0.0.3", ANDROID, c_events("c2")),
    ("193.0.0.2", FIREFOX_WIN, d_events("d")),
    ("193.0.0.4", FIREFOX_WIN, d_events("d2")),
)


async def play_script(running: Running, embed_key: str) -> None:
    # All eight sessions inside one minute, so that the minute numbers are those of the day.
    if time.time() % 60 > 45:
        await asyncio.sleep(61 - time.time() % 60)
    for ip, ua, events in VIEWERS:
        for line in events:
            assert (await running.post(embed_key, line, ip=ip, ua=ua)).status == 204


def totals(rows: list[dict[str, Any]], **match: str) -> dict[str, float]:
    rows = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert rows, match
    keys = (
        "views", "unique_viewers", "playing_seconds", "rebuffer_count", "rebuffer_seconds",
        "failures", "exits_before_start",
    )  # fmt: skip
    out = {k: sum(r[k] for r in rows) for k in keys}
    out["concurrent_peak"] = max(r["concurrent_peak"] for r in rows)
    return out


@pytest.mark.parametrize("granularity", ["minute", "hour", "day"])
async def test_scripted_sessions_give_exactly_the_expected_numbers(
    running: Running, granularity: str
) -> None:
    account = await running.create_account(k=2)
    await play_script(running, account["embed_key"])
    await running.flush()
    token = account["api_token"]
    stats = await running.stats(token, granularity=granularity)
    assert stats["k"] == 2
    total = totals(stats["rows"], stream="stream-42")
    assert total == {
        "views": 8,
        "unique_viewers": 8,
        "playing_seconds": 250.0,  # 2 x (60 + 35 + 0 + 30)
        "rebuffer_count": 2,
        "rebuffer_seconds": 10.0,
        "failures": 2,
        "exits_before_start": 2,
        "concurrent_peak": 6,
    }
    [row] = stats["rows"] if granularity != "minute" else stats["rows"][:1]
    if granularity != "minute":
        # each viewer's own average weighs the same: A 2250 kbps (3000 x 30 s + 1500 x 30 s),
        # B 2000 kbps, twice each (D sent no bitrate)
        assert row["bitrate_kbps_avg"] == pytest.approx(2125, rel=0.01)
        # startups 800, 1000 (msd), 1500 ms, two viewers each, k = 2: a bucket is shown
        # only where 2 viewers share it, so the buckets are coarsened into runs of >= 2
        # viewers counted at the run's median (aggregator/release/values.py); the 1500 ms of one
        # viewer alone cannot be the p95 any more, the quantiles stay inside the range
        assert row["startup_ms_p50"] == pytest.approx(1000, rel=0.2)
        # two viewers at 1500 ms: their bucket is shown, p95 lies inside it
        assert 800 <= row["startup_ms_p95"] <= EDGES_MS[bucket_of(1500)]

    by_country = (await running.stats(token, granularity=granularity, by="country"))["rows"]
    us, nl = totals(by_country, country="US"), totals(by_country, country="NL")
    assert (us["views"], us["unique_viewers"], us["playing_seconds"]) == (4, 4, 190.0)
    assert (us["rebuffer_count"], us["failures"]) == (2, 0)
    assert (nl["views"], nl["unique_viewers"], nl["playing_seconds"]) == (4, 4, 60.0)
    assert (nl["failures"], nl["exits_before_start"]) == (2, 2)

    by_device = (await running.stats(token, granularity=granularity, by="device"))["rows"]
    assert totals(by_device, device="desktop")["playing_seconds"] == 180.0
    assert totals(by_device, device="mobile")["playing_seconds"] == 70.0


@pytest.mark.settings(default_k=3)
async def test_cells_below_k_are_in_no_table_and_cannot_be_subtracted(running: Running) -> None:
    account = await running.create_account(k=3)
    embed = account["embed_key"]
    # 5 viewers in DE, 1 in FR, 1 in GB: FR and GB alone are below k; (other) = 2 < 3 as well,
    # so complementary suppression must hide enough that no 1 or 2 can be derived.
    ips = ["193.0.0.1", "193.0.0.2", "193.0.0.3", "193.0.0.4", "193.0.0.5"]
    countries = [*ips, "62.210.0.1", "81.2.69.160"]
    for i, ip in enumerate(countries):
        assert (await running.post(embed, ev(f"v{i}", 0, 0, sta="p"), ip=ip)).status == 204
    await running.flush()
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=int(running.ch.url.rsplit(":", 1)[1]), database=running.ch.database
    )
    try:
        stored = client.query(
            "SELECT breakdown, value, unique_viewers, granularity FROM cells FINAL "
            "WHERE account_id = {a:String}",
            parameters={"a": account["account_id"]},
        ).result_rows
    finally:
        client.close()
    assert stored, "nothing was written at all"
    assert all(viewers >= 3 for _, _, viewers, _ in stored), stored
    for granularity in ("minute", "hour", "day"):
        rows = (await running.stats(account["api_token"], granularity=granularity))["rows"]
        stream_total = sum(r["unique_viewers"] for r in rows)
        by_country = (
            await running.stats(account["api_token"], granularity=granularity, by="country")
        )["rows"]
        remainder = stream_total - sum(r["unique_viewers"] for r in by_country)
        assert remainder == 0 or remainder >= 3, (remainder, by_country)
        assert all(r["unique_viewers"] >= 3 for r in by_country)
        assert not any(r["country"] in ("FR", "GB") for r in by_country)


async def test_a_second_admin_flush_in_the_same_minute_writes_what_came_after_the_first(
    running: Running,
) -> None:
    a = await running.create_account("a", k=2)
    b = await running.create_account("b", k=2)
    for i, ip in enumerate(("8.8.8.8", "8.8.4.4")):
        assert (await running.post(a["embed_key"], ev(f"a{i}", 0, 0, sta="p"), ip=ip)).status == 204
    await running.flush()
    for i, ip in enumerate(("8.8.8.8", "8.8.4.4")):
        assert (await running.post(b["embed_key"], ev(f"b{i}", 0, 0, sta="p"), ip=ip)).status == 204
    await running.flush()
    for account in (a, b):
        rows = (await running.stats(account["api_token"], granularity="day"))["rows"]
        assert totals(rows, stream="stream-42")["views"] == 2


@pytest.mark.settings(provisional_seconds=300.0)
async def test_open_hour_and_day_cells_are_rewritten_provisionally(running: Running) -> None:
    account = await running.create_account(k=2)
    service = running.app[SERVICE]
    hour = time.time() // 3600 * 3600 - 3600  # the previous hour, so the test owns its clock
    t0 = hour + 600
    dims = Dimensions(country="US")
    service.submit(
        [
            Event(account["account_id"], session=s, viewer=s, arrival=t0, stream="stream-42",
                  kind="ps", dims=dims, ts_ms=0, seq=0, state="p")
            for s in (1, 2)
        ]
    )  # fmt: skip
    service._last_provisional = t0
    await service.flush(t0 + 70)  # the minute closes: minute cells written, the hour not yet due
    start = datetime.fromtimestamp(hour, UTC).isoformat()
    end = datetime.fromtimestamp(hour + 3600, UTC).isoformat()
    query = {"from": start, "to": end}
    assert (await running.stats(account["api_token"], granularity="minute", **query))["rows"]
    assert not (await running.stats(account["api_token"], granularity="hour", **query))["rows"]
    await service.flush(t0 + 70 + 301)  # provisional time: the open hour is written
    [row] = (await running.stats(account["api_token"], granularity="hour", **query))["rows"]
    assert (row["views"], row["unique_viewers"]) == (2, 2)


async def test_aggregates_expire_after_the_accounts_retention(running: Running) -> None:
    accounts = []
    for name, days in (("short", 1), ("long", 762)):
        resp = await running.admin(
            "POST",
            "/v1/admin/accounts",
            {"name": name, "origins": ["*"], "k": 2, "retention_days": days},
        )
        assert resp.status == 201
        accounts.append(await resp.json())
    short, long = accounts
    service = running.app[SERVICE]
    t0 = time.time() // 60 * 60 - 3 * 86400  # three days ago
    for n, account in enumerate((short, long)):
        service.submit(
            [
                Event(account["account_id"], session=10 * n + s, viewer=s, arrival=t0,
                      stream="stream-42", kind="ps", dims=Dimensions(), ts_ms=0, seq=0, state="p")
                for s in (1, 2)
            ]
        )  # fmt: skip
    report = await service.flush(t0 + 120, everything=True)
    assert report.rows >= 2 * 12  # both accounts' minute, hour and day cells were sent
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=int(running.ch.url.rsplit(":", 1)[1]), database=running.ch.database
    )
    try:

        def rows(account: dict[str, Any]) -> int:
            return int(
                client.query(
                    "SELECT count() FROM cells WHERE account_id = {a:String}",
                    parameters={"a": account["account_id"]},
                ).result_rows[0][0]
            )

        # Both accounts' cells were written alike; ClickHouse applies the TTL on insert and
        # on every merge, so the one-day account keeps nothing three days old.
        assert rows(long) > 0
        assert rows(short) == 0
        client.command("OPTIMIZE TABLE cells FINAL")
        assert rows(long) > 0
        assert rows(short) == 0
    finally:
        client.close()
