"""API tokens through the admin API and the CLI: created (shown once), listed (prefix only),
rotated and revoked; stored only as hashes; never valid for another account."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
from typing import Any

import clickhouse_connect
import pytest

from aggregator.api import account_api
from tests.integration.conftest import ADMIN_TOKEN, Running

TOKEN_KEYS = {"token_id", "prefix", "created_at", "revoked"}


async def status(running: Running, token: str, path: str = "/v1/stats") -> int:
    resp = await running.http.get(running.url + path, headers={"Authorization": f"Bearer {token}"})
    await resp.read()
    return resp.status


async def tokens_of(running: Running, account_id: str) -> list[dict[str, Any]]:
    resp = await running.admin("GET", f"/v1/admin/accounts/{account_id}/tokens")
    assert resp.status == 200
    body = await resp.json()
    assert body["account_id"] == account_id
    result: list[dict[str, Any]] = body["tokens"]
    return result


async def test_token_lifecycle(running: Running) -> None:
    account = await running.create_account()
    acc = account["account_id"]
    first = account["api_token"]

    resp = await running.admin("POST", f"/v1/admin/accounts/{acc}/tokens")
    assert resp.status == 201
    created = await resp.json()
    second = created["api_token"]
    assert re.fullmatch(r"st_[A-Za-z0-9_-]{32}", second)
    assert created["prefix"] == second[:8]
    assert created["revoked"] is False
    assert await status(running, first) == 200
    assert await status(running, second) == 200

    listing = await tokens_of(running, acc)
    assert [set(t) for t in listing] == [TOKEN_KEYS, TOKEN_KEYS]
    assert {t["prefix"] for t in listing} == {first[:8], second[:8]}
    text = json.dumps(listing)
    for token in (first, second):
        assert token not in text
        assert hashlib.sha256(token.encode()).hexdigest() not in text

    resp = await running.admin(
        "POST", f"/v1/admin/accounts/{acc}/tokens/{created['token_id']}/rotate"
    )
    assert resp.status == 201
    rotated = await resp.json()
    assert rotated["revoked_token_id"] == created["token_id"]
    third = rotated["api_token"]
    assert await status(running, second) == 401
    assert await status(running, third) == 200

    first_id = next(t["token_id"] for t in listing if t["prefix"] == first[:8])
    resp = await running.admin("DELETE", f"/v1/admin/accounts/{acc}/tokens/{first_id}")
    assert resp.status == 200
    assert (await resp.json())["revoked"] is True
    assert await status(running, first) == 401
    assert await status(running, third) == 200

    states = {t["token_id"]: t["revoked"] for t in await tokens_of(running, acc)}
    assert states == {first_id: True, created["token_id"]: True, rotated["token_id"]: False}
    # Revoking twice is harmless; rotating a revoked token is not possible.
    resp = await running.admin("DELETE", f"/v1/admin/accounts/{acc}/tokens/{first_id}")
    assert resp.status == 200
    resp = await running.admin("POST", f"/v1/admin/accounts/{acc}/tokens/{first_id}/rotate")
    assert resp.status == 404

    # In ClickHouse: hashes of live tokens only, never a token.
    host, port = running.ch.url.removeprefix("http://").split(":")
    client = clickhouse_connect.get_client(host=host, port=int(port), database=running.ch.database)
    try:
        stored = client.raw_query("SELECT * FROM api_tokens FORMAT TSV").decode()
        hashes = client.query(
            "SELECT token_hash FROM api_tokens FINAL WHERE account_id = {a:String} AND revoked = 0",
            parameters={"a": acc},
        ).result_rows
    finally:
        client.close()
    for token in (first, second, third):
        assert token not in stored
    assert hashes == [(hashlib.sha256(third.encode()).hexdigest(),)]


async def test_tokens_survive_a_reload_of_the_account_store(running: Running) -> None:
    from aggregator.api.auth import ACCOUNT_STORE

    account = await running.create_account()
    resp = await running.admin("POST", f"/v1/admin/accounts/{account['account_id']}/tokens")
    token = (await resp.json())["api_token"]
    acc = account["account_id"]
    first_id = (await tokens_of(running, acc))[0]["token_id"]
    assert (await running.admin("DELETE", f"/v1/admin/accounts/{acc}/tokens/{first_id}")).ok
    await running.app[ACCOUNT_STORE].load()  # what a restart sees
    assert await status(running, token) == 200
    assert await status(running, account["api_token"]) == 401


@pytest.mark.parametrize(
    ("method", "path", "auth", "expected"),
    [
        pytest.param("GET", "/v1/admin/accounts/{a}/tokens", None, 401, id="list-no-token"),
        pytest.param("GET", "/v1/admin/accounts/{a}/tokens", "api", 401, id="list-api-token"),
        pytest.param("POST", "/v1/admin/accounts/{a}/tokens", "api", 401, id="create-api-token"),
        pytest.param("GET", "/v1/admin/accounts", "api", 401, id="accounts-api-token"),
        pytest.param("GET", "/v1/admin/accounts/acc_0000000000000000/tokens", "admin", 404,
                     id="unknown-account"),
        pytest.param("POST", "/v1/admin/accounts/{a}/tokens/tok_0000000000000000/rotate",
                     "admin", 404, id="rotate-unknown-token"),
        pytest.param("DELETE", "/v1/admin/accounts/{a}/tokens/tok_0000000000000000", "admin",
                     404, id="revoke-unknown-token"),
        pytest.param("DELETE", "/v1/admin/accounts/{a}/tokens/{other_tok}", "admin", 404,
                     id="revoke-another-accounts-token"),
        pytest.param("POST", "/v1/admin/accounts/{a}/tokens/{other_tok}/rotate", "admin", 404,
                     id="rotate-another-accounts-token"),
    ],
)  # fmt: skip
async def test_token_api_refusals(
    running: Running, method: str, path: str, auth: str | None, expected: int
) -> None:
    account = await running.create_account("A")
    other = await running.create_account("B")
    [other_tok] = await tokens_of(running, other["account_id"])
    url = running.url + path.format(a=account["account_id"], other_tok=other_tok["token_id"])
    headers = {}
    if auth == "api":
        headers["Authorization"] = f"Bearer {account['api_token']}"
    elif auth == "admin":
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    resp = await running.http.request(method, url, headers=headers)
    assert resp.status == expected, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert await status(running, other["api_token"]) == 200  # B's token still works
    assert len(await tokens_of(running, other["account_id"])) == 1


async def test_token_routes_of_a_deleted_account_are_gone(running: Running) -> None:
    account = await running.create_account()
    resp = await running.admin("DELETE", f"/v1/admin/accounts/{account['account_id']}")
    assert resp.status == 200
    for method, path in (
        ("GET", "/tokens"),
        ("POST", "/tokens"),
        ("DELETE", "/tokens/tok_0000000000000000"),
    ):
        resp = await running.admin(method, f"/v1/admin/accounts/{account['account_id']}{path}")
        assert resp.status == 410, path


def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamtally")
    sub = parser.add_subparsers(dest="command", required=True)
    account_api.add_cli(sub)
    accounts = sub.add_parser("accounts")
    account_api.add_accounts_cli(accounts.add_subparsers(dest="accounts_command", required=True))
    return parser.parse_args(argv)


async def test_cli_creates_lists_rotates_and_revokes(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    account = await running.create_account()
    acc = account["account_id"]
    common = ("--server", running.url, "--admin-token", ADMIN_TOKEN)

    async def run(*argv: str) -> Any:
        args = cli(*argv, *common)
        code = await asyncio.to_thread(args.func, args)
        out = capsys.readouterr().out
        assert code == 0, out
        return json.loads(out)

    created = await run("tokens", "create", "--account-id", acc)
    assert await status(running, created["api_token"]) == 200
    listed = await run("tokens", "list", "--account-id", acc)
    assert len(listed["tokens"]) == 2
    assert created["api_token"] not in json.dumps(listed)
    rotated = await run("tokens", "rotate", "--account-id", acc, "--token-id", created["token_id"])
    assert await status(running, created["api_token"]) == 401
    await run("tokens", "revoke", "--account-id", acc, "--token-id", rotated["token_id"])
    assert await status(running, rotated["api_token"]) == 401
    listing = await run("accounts", "list")
    assert acc in [a["account_id"] for a in listing["accounts"]]
    receipt = await run("accounts", "delete", "--account-id", acc, "--yes")
    assert receipt["verified_zero"] is True
    assert (await running.post(account["embed_key"], "x")).status == 410

    args = cli("tokens", "list", "--account-id", "acc_0000000000000000", *common)
    assert await asyncio.to_thread(args.func, args) == 1  # 404 -> exit code 1
    capsys.readouterr()


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        (None, "required"),
        ("Bearer not-the-admin-token", "not accepted"),
        ("Basic abc", "required"),
    ],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_an_admin_token_refusal_says_what_is_wrong(
    running: Running, header: str | None, needle: str
) -> None:
    headers = {"Authorization": header} if header else {}
    resp = await running.http.get(running.url + "/v1/admin/accounts", headers=headers)
    body = await resp.json()
    assert resp.status == 401
    assert needle in body["detail"]
    assert ("required" in body["detail"]) == (needle == "required")


async def test_a_wrong_api_token_is_not_accepted(running: Running) -> None:
    resp = await running.http.get(
        running.url + "/v1/stats", headers={"Authorization": "Bearer st_" + "x" * 32}
    )
    assert resp.status == 401
    assert "not accepted" in (await resp.json())["detail"]
