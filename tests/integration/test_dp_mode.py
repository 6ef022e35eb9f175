"""dp mode through the real service: account settings round-trip through ClickHouse, the
next UTC day rule, the budget route and the noise on stats rows (aggregator/noise.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from aggregator.accounts_store import AccountStore
from aggregator.auth import ACCOUNT_STORE
from aggregator.cells import Group
from aggregator.service import SERVICE
from tests.integration.conftest import ORIGIN, Running


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
