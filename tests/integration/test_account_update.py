"""Accounts that change, through the admin API and the CLI: PATCH /v1/admin/accounts/{id}
is audited; a new k is in force from the next UTC day, and the release never mixes two k
in one window, not even for the windows that close just after midnight."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from aggregator import cli
from aggregator.api import account_api
from aggregator.api.auth import ACCOUNT_STORE
from aggregator.service import SERVICE
from aggregator.storage.accounts_store import CHANGEABLE
from collector.handover import Dimensions, Event
from tests.integration.conftest import ADMIN_TOKEN, Running
from tests.integration.test_audit import audit_log


def today() -> date:
    return datetime.now(UTC).date()


async def patch(running: Running, account_id: str, body: Any) -> tuple[int, dict[str, Any]]:
    resp = await running.admin("PATCH", f"/v1/admin/accounts/{account_id}", body)
    return resp.status, await resp.json()


async def test_patch_changes_the_account_now_and_k_tomorrow(running: Running) -> None:
    account = await running.create_account(k=5)
    acc = account["account_id"]
    status, body = await patch(
        running,
        acc,
        {"name": "Acme TV", "origins": ["https://tv.example"], "k": 3, "retention_days": 90,
         "streams": ["news"], "stream_patterns": ["match-*"]},
    )  # fmt: skip
    assert status == 200, body
    tomorrow = (today() + timedelta(days=1)).isoformat()
    assert body["name"] == "Acme TV"
    assert body["origins"] == ["https://tv.example"]
    assert (body["retention_days"], body["streams"], body["stream_patterns"]) == (
        90, ["news"], ["match-*"]
    )  # fmt: skip
    assert body["k"] == 5
    assert body["k_pending"] == {"k": 3, "from": tomorrow}
    assert "embed_key" in body
    assert "api_token" not in body

    # The old origin is refused from now on; the new one is accepted.
    line = 'cid="news",e=ps,sid="s1",sn=0,sta=p,ts=1795480000000,v=2\n'
    assert (await running.post(account["embed_key"], line)).status == 403
    assert (await running.post(account["embed_key"], line, origin="https://tv.example")).status in (
        200, 204
    )  # fmt: skip
    # Customers see the k in force today.
    assert (await running.stats(account["api_token"]))["k"] == 5

    [entry] = [e for e in await audit_log(running, account["api_token"])
               if e["action"] == "account.update"]  # fmt: skip
    assert entry["actor"] == "admin"
    assert entry["summary"]["k"] == {"now": 5, "next": 3, "from": tomorrow}
    assert set(entry["summary"]["changed"]) == {
        "name", "origins", "k", "retention_days", "streams", "stream_patterns"
    }  # fmt: skip
    assert "Acme TV" not in json.dumps(entry)
    assert "tv.example" not in json.dumps(entry)

    listed = await (await running.admin("GET", "/v1/admin/accounts")).json()
    [row] = [a for a in listed["accounts"] if a["account_id"] == acc]
    assert (row["name"], row["k"], row["k_pending"]) == ("Acme TV", 5, {"k": 3, "from": tomorrow})


@pytest.mark.parametrize(
    ("body", "status", "key"),
    [
        ({"origins": []}, 400, "origins"),
        ({"k": 1}, 400, "k"),
        ({"embed_key": "ek_mine"}, 400, "embed_key"),
        ({}, 400, "body"),
        ([], 400, "body"),
    ],
    ids=["no-origins", "k-1", "embed-key", "empty", "not-an-object"],
)
async def test_patch_refusals_say_which_field(
    running: Running, body: Any, status: int, key: str
) -> None:
    account = await running.create_account()
    code, problem = await patch(running, account["account_id"], body)
    assert (code, problem.get("key")) == (status, key), problem
    if key == "origins":
        assert "Origin" in problem["detail"]
        assert '"*"' in problem["detail"]


async def test_patch_needs_the_admin_token_and_a_live_account(running: Running) -> None:
    account = await running.create_account()
    resp = await running.http.patch(
        running.url + f"/v1/admin/accounts/{account['account_id']}", json={"name": "x"},
        headers={"Authorization": f"Bearer {account['api_token']}"},
    )  # fmt: skip
    assert resp.status == 401
    assert (await patch(running, "acc_0000000000000000", {"name": "x"}))[0] == 404
    await running.admin("DELETE", f"/v1/admin/accounts/{account['account_id']}")
    assert (await patch(running, account["account_id"], {"name": "x"}))[0] == 410


def viewers(account_id: str, at: float, n: int, first: int) -> list[Event]:
    return [
        Event(account_id, session=first + v, viewer=first + v, arrival=at, stream="late-show",
              kind="ps", dims=Dimensions(country="US"), ts_ms=int(at * 1000), seq=0, state="p")
        for v in range(n)
    ]  # fmt: skip


async def test_a_lowered_k_does_not_reach_back_into_the_day_before(running: Running) -> None:
    """The attack: lower k late in the day, so that the small audience of the day's last
    minute -- closed and released only after midnight -- is published under the new k."""
    account = await running.create_account(k=10)
    acc = account["account_id"]
    service = running.app[SERVICE]
    day = today() - timedelta(days=1)  # a past day, so that the test owns its clock
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + 86400
    await running.app[ACCOUNT_STORE].update(acc, today=day, k=2)  # 2 from midnight on

    service.submit(viewers(acc, midnight - 60 + 5, 3, first=1))  # 3 viewers at 23:59:05
    await service.flush(midnight + 30)  # 23:59 closes after midnight
    service.submit(viewers(acc, midnight + 65, 4, first=100))  # 4 viewers at 00:01:05
    await service.flush(midnight + 150)
    await service.flush(midnight + 200, everything=True)  # hour 23 and the day close

    def window(start: float, hours: int) -> dict[str, str]:
        return {"from": datetime.fromtimestamp(start, UTC).isoformat(),
                "to": datetime.fromtimestamp(start + hours * 3600, UTC).isoformat()}  # fmt: skip

    token = account["api_token"]
    for granularity in ("minute", "hour", "day"):
        before = await running.stats(token, granularity=granularity, **window(midnight - 86400, 24))
        assert before["rows"] == [], granularity  # 3 < 10, the k of that day
    [after] = (await running.stats(token, granularity="minute", **window(midnight, 1)))["rows"]
    assert after["unique_viewers"] == 4  # 4 >= 2, the k of the new day


async def test_cli_updates_and_delete_asks_first(
    running: Running, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await running.create_account()
    acc = account["account_id"]
    common = ("--server", running.url, "--admin-token", ADMIN_TOKEN)
    parser = cli.build_parser()

    async def run(*argv: str, stdin: str = "") -> tuple[int, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        args: argparse.Namespace = parser.parse_args([*argv, *common])
        code = await asyncio.to_thread(args.func, args)
        captured = capsys.readouterr()
        return code, captured.out + captured.err if code else captured.out

    code, out = await run("accounts", "update", "--account-id", acc, "--name", "Renamed",
                          "--origin", "https://a.example", "--origin", "https://b.example",
                          "--k", "4", "--retention-days", "30", "--stream", "news")  # fmt: skip
    assert code == 0, out
    body = json.loads(out)
    assert (body["name"], body["origins"], body["retention_days"]) == (
        "Renamed", ["https://a.example", "https://b.example"], 30
    )  # fmt: skip
    assert body["k_pending"]["k"] == 4
    code, out = await run("accounts", "update", "--account-id", acc, "--no-streams")
    assert (code, json.loads(out)["streams"]) == (0, [])

    code, out = await run("accounts", "delete", "--account-id", acc, stdin="no\n")
    assert code == 1
    assert "not deleted" in out
    assert running.app[ACCOUNT_STORE].by_id(acc).deleted is False  # type: ignore[union-attr]
    code, out = await run("accounts", "delete", "--account-id", acc, stdin="")  # no terminal
    assert code == 1
    assert "--yes" in out
    code, out = await run("accounts", "delete", "--account-id", acc, stdin=acc + "\n")
    assert code == 0, out
    assert json.loads(out)["verified_zero"] is True
    # --yes asks nothing (this account does not exist: the server's 404 is the answer).
    code, out = await run("accounts", "delete", "--account-id", "acc_0000000000000000", "--yes")
    assert code == 1
    assert "Type the account id" not in out
    assert "no such account" in out


def test_the_update_subcommand_has_a_flag_for_every_changeable_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["accounts", "update", "--help"])
    text = capsys.readouterr().out
    for field in CHANGEABLE:
        assert "--" + field.replace("_", "-").removesuffix("s") in text, field
    args = cli.build_parser().parse_args(["accounts", "update", "--account-id", "a"])
    assert args.func is account_api.cmd_accounts_update
    assert args.func(args) == 2  # nothing to change
