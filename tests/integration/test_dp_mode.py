"""dp mode through the real service: account settings round-trip through ClickHouse, the
next UTC day rule, the budget route and the noise on stats rows (aggregator/release/noise.py), and
the same noise (scale and 95 % interval) in the stats CSV and the export (ndjson, csv)."""

from __future__ import annotations

import csv
import io
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from aggregator.api.auth import ACCOUNT_STORE
from aggregator.api.export import COLUMNS
from aggregator.counting.cells import Group
from aggregator.release.noise import interval95
from aggregator.service import SERVICE
from aggregator.storage.accounts_store import AccountStore
from tests.integration.conftest import ORIGIN, Running
from tests.integration.test_stats_api import HOUR, cell, get, put_cells


async def create(running: Running, privacy: Any) -> tuple[int, dict[str, Any]]:
    resp = await running.admin(
        "POST",
        "/v1/admin/accounts",
        {"name": "dp", "origins": [ORIGIN], "k": 5, "privacy": privacy},
    )
    return resp.status, await resp.json()


async def test_a_dp_account_is_stored_and_applies_from_the_next_utc_day(running: Running) -> None:
    status, body = await create(running, {"mode": "dp", "epsilon_per_day": 1.5})
    assert status == 201, body
    tomorrow = (int(time.time()) // 86_400 + 1) * 86_400
    assert body["privacy"] == {
        "mode": "dp",
        "epsilon_per_day": 1.5,
        "delta": 1e-6,
        "from": datetime.fromtimestamp(tomorrow, UTC).date().isoformat(),
    }
    fresh = AccountStore(running.app[SERVICE].store)
    await fresh.load()
    account = fresh.by_id(body["account_id"])
    assert account is not None
    assert (account.privacy, account.epsilon_per_day, account.delta) == ("dp", 1.5, 1e-6)
    assert account.privacy_from == tomorrow
    listed = await (await running.admin("GET", "/v1/admin/accounts")).json()
    [mine] = [a for a in listed["accounts"] if a["account_id"] == body["account_id"]]
    assert mine["privacy"] == body["privacy"]
    service = running.app[SERVICE]
    assert service._dp_of(body["account_id"], tomorrow - 86_400) is None  # today: k
    assert service._dp_of(body["account_id"], tomorrow) is not None


@pytest.mark.parametrize(
    "privacy",
    [{"mode": "x"}, {"mode": "dp", "epsilon_per_day": 0}, {"mode": "dp", "delta": 0.5}, {"eps": 1}],
    ids=["unknown-mode", "zero-epsilon", "delta-too-big", "unknown-key"],
)
async def test_bad_privacy_settings_are_refused(running: Running, privacy: Any) -> None:
    status, body = await create(running, privacy)
    assert status == 400, body
    assert body["key"] == "privacy"


async def test_budget_route_and_noisy_rows_of_a_dp_day(running: Running) -> None:
    """A closed dp day of 300 viewers (tomorrow, when dp applies), written by the service:
    the budget route shows what it spent; the day row carries its noise; a k account's
    budget is empty."""
    status, body = await create(running, {"mode": "dp"})
    assert status == 201
    account_id, token = body["account_id"], body["api_token"]
    tomorrow = (int(time.time()) // 86_400 + 1) * 86_400
    service = running.app[SERVICE]
    g = Group(account_id, "minute", datetime.fromtimestamp(tomorrow, UTC), tomorrow + 60)
    cell = g.cell("news", "", "")
    for v in range(300):
        cell.viewers.add(v)
        cell.views += 1
        cell.playing_ms += 60_000
    service.ledger.add_minute(g)
    service.ledger.advance(tomorrow + 86_400)
    await service.flush(everything=True)

    resp = await running.http.get(
        running.url + "/v1/privacy/budget", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200
    budget = await resp.json()
    assert budget["privacy"]["mode"] == "dp"
    [day] = budget["days"]
    assert day["day"] == datetime.fromtimestamp(tomorrow, UTC).date().isoformat()
    assert 0 < day["epsilon_spent"] <= 2.0
    assert day["parts_released"] >= 1

    start = datetime.fromtimestamp(tomorrow, UTC).isoformat()
    end = datetime.fromtimestamp(tomorrow + 86_400, UTC).isoformat()
    stats = await running.stats(token, granularity="day", **{"from": start, "to": end})
    [row] = stats["rows"]
    assert set(row["noise"]) == {"views", "unique_viewers", "playing_seconds", "failures"}
    assert row["noise"]["views"]["ci95"] > 0
    again = await running.stats(token, granularity="day", **{"from": start, "to": end})
    assert again["rows"] == stats["rows"]  # noise is stored: re-reads are identical

    k_account = await running.create_account("k")
    resp = await running.http.get(
        running.url + "/v1/privacy/budget",
        headers={"Authorization": f"Bearer {k_account['api_token']}"},
    )
    assert (await resp.json())["days"] == []
    assert running.app[ACCOUNT_STORE].by_id(k_account["account_id"]).privacy == "k"  # type: ignore[union-attr]


NOISY = ("views", "unique_viewers", "playing_seconds", "failures")
UNIT = {"views": 1.0, "unique_viewers": 1.0, "playing_seconds": 1 / 1000, "failures": 1.0}
NOISE_COLUMNS = [f"{m}_{w}" for m in NOISY for w in ("noise_scale", "ci95")]


async def dp_day(running: Running) -> tuple[dict[str, Any], int]:
    """A dp account whose first dp day (tomorrow) the service released: stream 'news' with
    700 viewers in its first hour (above the hour threshold: an hour row, and a day row
    holding it), 'sport' with 300 (only a day row); and one hour row of today, before dp."""
    status, body = await create(running, {"mode": "dp"})
    assert status == 201
    tomorrow = (int(time.time()) // 86_400 + 1) * 86_400
    service = running.app[SERVICE]
    g = Group(body["account_id"], "minute", datetime.fromtimestamp(tomorrow, UTC), tomorrow + 60)
    for stream, viewers, offset in (("news", 700, 0), ("sport", 300, 10_000)):
        c = g.cell(stream, "", "")
        for v in range(viewers):
            c.viewers.add(offset + v)
            c.views += 1
            c.playing_ms += 60_000
            c.failures += v % 10 == 0
    service.ledger.add_minute(g)
    service.ledger.advance(tomorrow + 86_400)
    await service.flush(everything=True)
    await put_cells(running, [cell(body["account_id"], HOUR, stream="before-dp", views=7)])
    return body, tomorrow


def expected_ci95(metric: str, scale: float, hour_scales: list[float]) -> float:
    """The 95 % interval a row of ``scale`` must show: the exact discrete Laplace quantile
    (noise.interval95) for one part; with hour parts inside (a day row), variances add."""
    unit = UNIT[metric]
    if not hour_scales:
        return interval95(scale / unit) * unit
    var = 2 * scale**2 + sum(2 * h**2 for h in hour_scales)
    return 1.96 * math.sqrt(var)


def tail(scale: float, t: float) -> float:
    """P[|X| > t] for X discrete Laplace of ``scale`` (P[X = x] ∝ e^{-|x|/scale}), summed
    from the distribution itself, not from aggregator/release/noise.py."""
    q = math.exp(-1 / scale)
    first = math.floor(t) + 1  # the smallest integer above t
    return 2 * q**first / (1 + q) if t >= 0 else 1.0


async def test_every_noisy_number_carries_the_same_interval_in_json_csv_and_export(
    running: Running,
) -> None:
    body, tomorrow = await dp_day(running)
    token = body["api_token"]
    span = {
        "from": datetime.fromtimestamp(tomorrow, UTC).isoformat(),
        "to": datetime.fromtimestamp(tomorrow + 86_400, UTC).isoformat(),
    }
    shown: dict[tuple[str, str, str], dict[str, Any]] = {}
    for granularity in ("hour", "day"):
        rows = (await running.stats(token, granularity=granularity, **span))["rows"]
        for row in rows:
            shown[(granularity, row["window_start"], row["stream"])] = row["noise"]
    assert ("day", span["from"].replace("+00:00", "Z"), "sport") in shown
    hours = {key: noise for key, noise in shown.items() if key[0] == "hour"}
    assert {stream for _, _, stream in hours} == {"news"}, "700 viewers pass the hour threshold"

    # the interval is there, positive, and the one the scale gives
    for (granularity, _, stream), noise in shown.items():
        assert set(noise) == set(NOISY)
        for metric, values in noise.items():
            assert values["scale"] > 0
            assert values["ci95"] > 0
            inside = [h[metric]["scale"] for (_, _, s), h in hours.items() if s == stream]
            want = expected_ci95(metric, values["scale"], inside if granularity == "day" else [])
            assert values["ci95"] == pytest.approx(want, abs=2e-3), (granularity, stream, metric)

    # an hour row's interval is the 95 % quantile of its noise: at most 5 % beyond it,
    # more than 5 % beyond one step less
    for noise in hours.values():
        for metric, values in noise.items():
            scale, ci = values["scale"] / UNIT[metric], round(values["ci95"] / UNIT[metric])
            assert tail(scale, ci) <= 0.05 < tail(scale, ci - 1), metric

    # the stats CSV: the same numbers, flat, after the metrics
    for granularity in ("hour", "day"):
        status, _, raw = await get(
            running, "/v1/stats", token, granularity=granularity, format="csv", **span
        )
        assert status == 200
        reader = csv.DictReader(io.StringIO(raw.decode()))
        assert reader.fieldnames is not None
        assert reader.fieldnames[-8:] == NOISE_COLUMNS
        for line in reader:
            noise = shown[(granularity, line["window_start"], line["stream"])]
            for metric in NOISY:
                assert float(line[f"{metric}_noise_scale"]) == noise[metric]["scale"]
                assert float(line[f"{metric}_ci95"]) == noise[metric]["ci95"]

    # the export, ndjson and csv: the same numbers; the row from before dp has none
    status, _, raw = await get(running, "/v1/export", token, format="ndjson")
    assert status == 200
    manifest, *cells = [json.loads(line) for line in raw.splitlines()]
    schema = {c["name"]: c for c in manifest["manifest"]["schema"]}
    assert list(schema) == [*COLUMNS, *NOISE_COLUMNS]
    for name in NOISE_COLUMNS:
        assert schema[name]["type"] == "Nullable(Float64)"
        assert "95 %" in schema[name]["description"] or "scale" in schema[name]["description"]
    status, _, raw = await get(running, "/v1/export", token, format="csv")
    assert status == 200
    csv_rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert len(csv_rows) == len(cells) == len(shown) + 1
    for row, line in zip(cells, csv_rows, strict=True):
        key = (row["granularity"], row["window_start"], row["stream"])
        assert (line["granularity"], line["window_start"], line["stream"]) == key
        if row["stream"] == "before-dp":
            assert all(row[c] is None for c in NOISE_COLUMNS)
            assert all(line[c] == "" for c in NOISE_COLUMNS)
            continue
        for metric in NOISY:
            for column, field in (("noise_scale", "scale"), ("ci95", "ci95")):
                want = shown[key][metric][field]
                assert row[f"{metric}_{column}"] == want, (key, metric, column)
                assert float(line[f"{metric}_{column}"]) == want, (key, metric, column)
        assert row["views"] == int(line["views"])

    # parquet: the same columns, nulls where there is no noise, the same numbers
    status, _, raw = await get(running, "/v1/export", token, format="parquet")
    assert status == 200
    table = pq.read_table(io.BytesIO(raw)).to_pylist()
    assert [list(r) for r in table[:1]] == [[*COLUMNS, *NOISE_COLUMNS]]
    for row, again_row in zip(cells, table, strict=True):
        assert {c: again_row[c] for c in NOISE_COLUMNS} == {c: row[c] for c in NOISE_COLUMNS}

    # read again: nothing moved
    again = (await running.stats(token, granularity="day", **span))["rows"]
    assert {(r["window_start"], r["stream"]): r["noise"] for r in again} == {
        (w, s): n for (g, w, s), n in shown.items() if g == "day"
    }


async def test_k_accounts_export_and_csv_are_unchanged(running: Running) -> None:
    account = await running.create_account("k")
    await put_cells(running, [cell(account["account_id"], HOUR, views=7, unique_viewers=10)])
    status, _, raw = await get(running, "/v1/export", account["api_token"], format="ndjson")
    assert status == 200
    manifest, row = [json.loads(line) for line in raw.splitlines()]
    assert [c["name"] for c in manifest["manifest"]["schema"]] == list(COLUMNS) == list(row)
    status, _, raw = await get(
        running, "/v1/stats", account["api_token"], granularity="hour", format="csv",
        **{"from": HOUR.isoformat()},
    )  # fmt: skip
    assert status == 200
    header = raw.decode().splitlines()[0].split(",")
    assert not [c for c in header if "noise" in c or "ci95" in c]
