"""The audit log: token and account changes, reads and purges are recorded without viewer data
or full tokens; GET /v1/audit serves the caller's own entries, newest first."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import clickhouse_connect
import pytest
from aiohttp.test_utils import make_mocked_request

from aggregator.api import audit
from aggregator.service import SERVICE
from collector.errors import StorageError
from tests.integration.conftest import ADMIN_TOKEN, Running


async def audit_log(running: Running, token: str, **params: str) -> list[dict[str, Any]]:
    resp = await running.http.get(
        running.url + "/v1/audit", params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    entries: list[dict[str, Any]] = body["entries"]
    return entries


def client_of(running: Running) -> Any:
    host, port = running.ch.url.removeprefix("http://").split(":")
    return clickhouse_connect.get_client(host=host, port=int(port), database=running.ch.database)


def request_with(running: Running, token: str) -> Any:
    return make_mocked_request(
        "GET", "/v1/stats", headers={"Authorization": f"Bearer {token}"}, app=running.app
    )


async def test_token_changes_are_recorded_with_the_admin_as_actor(running: Running) -> None:
    account = await running.create_account()
    acc, token = account["account_id"], account["api_token"]
    created = await (await running.admin("POST", f"/v1/admin/accounts/{acc}/tokens")).json()
    rotated = await (
        await running.admin("POST", f"/v1/admin/accounts/{acc}/tokens/{created['token_id']}/rotate")
    ).json()
    await running.admin("DELETE", f"/v1/admin/accounts/{acc}/tokens/{rotated['token_id']}")

    entries = await audit_log(running, token)
    changes = [e for e in entries if e["action"].startswith("token.")]
    assert [e["action"] for e in changes] == ["token.revoke", "token.rotate", "token.create"]
    assert {e["actor"] for e in changes} == {"admin"}
    assert changes[2]["summary"] == {"token_id": created["token_id"], "prefix": created["prefix"]}
    assert changes[1]["summary"]["revoked_token_id"] == created["token_id"]
    times = [datetime.fromisoformat(e["time"]) for e in entries]
    assert times == sorted(times, reverse=True)  # newest first

    text = json.dumps(entries)
    for plaintext in (token, created["api_token"], rotated["api_token"]):
        assert plaintext not in text
    client = client_of(running)
    try:
        stored = client.raw_query("SELECT * FROM audit FORMAT TSV").decode()
    finally:
        client.close()
    for plaintext in (token, created["api_token"], rotated["api_token"], ADMIN_TOKEN):
        assert plaintext not in stored


async def test_reading_the_log_is_recorded_with_the_token_prefix(running: Running) -> None:
    account = await running.create_account()
    token = account["api_token"]
    [created] = await audit_log(running, token)
    assert (created["action"], created["actor"]) == ("account.create", "admin")
    entry, created_again = await audit_log(running, token)
    assert entry["action"] == "audit.read"
    assert entry["actor"] == token[:8]
    assert created_again == created


async def test_limit_from_and_to(running: Running) -> None:
    account = await running.create_account()
    acc, token = account["account_id"], account["api_token"]
    store = running.app[SERVICE].store
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for day in range(5):
        await audit.write(
            store,
            account_id=acc,
            actor="admin",
            action="token.create",
            summary={"n": day},
            at=base + timedelta(days=day),
        )
    two = await audit_log(running, token, limit="2", to="2026-11-06T00:00:00Z")
    assert [e["summary"]["n"] for e in two] == [4, 3]
    window = await audit_log(
        running, token, **{"from": "2026-11-02T00:00:00Z", "to": "2026-11-04T00:00:00Z"}
    )
    assert [e["summary"]["n"] for e in window] == [2, 1]
    assert window[0]["time"] == "2026-11-03T00:00:00.000Z"


async def test_one_account_never_sees_another_accounts_entries(running: Running) -> None:
    a = await running.create_account("A")
    b = await running.create_account("B")
    await running.admin("POST", f"/v1/admin/accounts/{b['account_id']}/tokens")
    assert [
        e["action"] for e in await audit_log(running, a["api_token"]) if e["action"] != "audit.read"
    ] == ["account.create"]
    assert [e["action"] for e in await audit_log(running, b["api_token"])] == [
        "token.create",
        "account.create",
    ]


@pytest.mark.parametrize(
    ("params", "auth", "status"),
    [
        pytest.param({}, None, 401, id="no-token"),
        pytest.param({}, "admin", 401, id="admin-token-is-no-account"),
        pytest.param({"limit": "0"}, "api", 400, id="limit-zero"),
        pytest.param({"limit": "5000"}, "api", 400, id="limit-too-big"),
        pytest.param({"limit": "ten"}, "api", 400, id="limit-not-a-number"),
        pytest.param({"from": "yesterday"}, "api", 400, id="from-not-a-time"),
        pytest.param(
            {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "api", 400,
            id="from-after-to",
        ),
    ],
)  # fmt: skip
async def test_audit_refusals(
    running: Running, params: dict[str, str], auth: str | None, status: int
) -> None:
    account = await running.create_account()
    headers = {}
    if auth == "api":
        headers["Authorization"] = f"Bearer {account['api_token']}"
    elif auth == "admin":
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    resp = await running.http.get(running.url + "/v1/audit", params=params, headers=headers)
    assert resp.status == status
    body = await resp.json(content_type=None)
    assert body["status"] == status
    if status == 400:
        assert body["key"] in params


async def test_rows_carry_their_retention_and_the_table_expires_them(running: Running) -> None:
    account = await running.create_account()
    await running.admin("POST", f"/v1/admin/accounts/{account['account_id']}/tokens")
    client = client_of(running)
    try:
        assert client.query("SELECT DISTINCT retention_days FROM audit").result_rows == [
            (audit.AUDIT_RETENTION_DAYS,)
        ]
        [(ddl,)] = client.query(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'audit'"
        ).result_rows
        assert "TTL toDateTime(time) + toIntervalDay(retention_days)" in ddl
    finally:
        client.close()


async def test_summaries_never_keep_a_full_token(running: Running) -> None:
    account = await running.create_account()
    token = account["api_token"]
    request = request_with(running, token)
    await audit.record(request, account["account_id"], "stats.read", {"leak": f"x {token} y"})
    [entry] = [e for e in await audit_log(running, token) if e["action"] == "stats.read"]
    assert entry["summary"] == {"leak": f"x {token[:8]}... y"}
    assert entry["actor"] == token[:8]


async def test_a_failed_audit_write_fails_changes_but_not_reads(running: Running) -> None:
    account = await running.create_account()
    request = request_with(running, account["api_token"])
    client = client_of(running)
    try:
        client.command("RENAME TABLE audit TO audit_away")
        try:
            await audit.record(request, account["account_id"], "stats.read", {})  # no raise
            with pytest.raises(StorageError):
                await audit.record(request, account["account_id"], "export", {})
            resp = await running.admin("POST", f"/v1/admin/accounts/{account['account_id']}/tokens")
            assert resp.status == 500
        finally:
            client.command("RENAME TABLE audit_away TO audit")
    finally:
        client.close()
    listing = await running.admin("GET", f"/v1/admin/accounts/{account['account_id']}/tokens")
    tokens = (await listing.json())["tokens"]
    assert [t["revoked"] for t in tokens] == [False, True]  # the unrecorded token was revoked
