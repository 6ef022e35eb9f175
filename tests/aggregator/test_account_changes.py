"""Accounts that change: name, origins, retention and declared streams at once; a new k from
the next UTC day, so that no window is released under two k; no account without origins."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from aggregator.storage.accounts_store import AccountStore
from aggregator.storage.migrate import migrate
from aggregator.storage.store import Store
from collector.accounts import Account
from collector.errors import BadRequest, Gone, NotFound

TODAY = date(2026, 12, 6)
TOMORROW = TODAY + timedelta(days=1)


@pytest.fixture
async def accounts(store: Store) -> AccountStore:
    await migrate(store)
    directory = AccountStore(store)
    await directory.load()
    return directory


def test_an_account_answers_the_k_in_force_on_a_day() -> None:
    account = Account("acc_1", "A", "ek_1", ("*",), k=10, next_k=3, next_k_from=TOMORROW)
    assert [account.k_on(TODAY - timedelta(days=3)), account.k_on(TODAY)] == [10, 10]
    assert [account.k_on(TOMORROW), account.k_on(TOMORROW + timedelta(days=30))] == [3, 3]
    assert Account("acc_2", "B", "ek_2", ("*",), k=7).k_on(TOMORROW) == 7


async def test_name_origins_retention_and_streams_change_at_once(accounts: AccountStore) -> None:
    account, token = await accounts.create("Example TV", ["https://example.com"], streams=["a"])
    changed, summary = await accounts.update(
        account.account_id,
        today=TODAY,
        name="Example Television",
        origins=["https://WWW.example.com/", "https://example.com"],
        retention_days=30,
        streams=["news-1", "news-1", "sport"],
        stream_patterns=["match-*"],
    )
    assert changed.name == "Example Television"
    assert changed.origins == ("https://www.example.com", "https://example.com")
    assert changed.retention_days == 30
    assert changed.streams == ("news-1", "sport")
    assert changed.declares_stream("match-12")
    assert not changed.declares_stream("a")
    assert (changed.embed_key, changed.k) == (account.embed_key, account.k)
    assert accounts.by_embed_key(account.embed_key) == changed
    assert await accounts.verify_token(token) == changed
    assert set(summary["changed"]) == {
        "name", "origins", "retention_days", "streams", "stream_patterns"
    }  # fmt: skip
    assert "Example" not in repr(summary)  # counts, not the account's data


async def test_a_new_k_takes_effect_from_the_next_utc_day(
    accounts: AccountStore, store: Store
) -> None:
    account, _ = await accounts.create("League", ["*"], k=10)
    changed, summary = await accounts.update(account.account_id, today=TODAY, k=4)
    assert (changed.k, changed.next_k, changed.next_k_from) == (10, 4, TOMORROW)
    assert (changed.k_on(TODAY), changed.k_on(TOMORROW)) == (10, 4)
    assert summary["k"] == {"now": 10, "next": 4, "from": TOMORROW.isoformat()}

    again, _ = await accounts.update(account.account_id, today=TODAY, k=6)  # same day: replaces
    assert (again.k_on(TODAY), again.k_on(TOMORROW)) == (10, 6)
    back, _ = await accounts.update(account.account_id, today=TODAY, k=10)  # back: nothing pending
    assert (back.k, back.next_k, back.next_k_from) == (10, 0, None)

    await accounts.update(account.account_id, today=TODAY, k=5)
    later, _ = await accounts.update(account.account_id, today=TOMORROW, k=8)
    # On the day 5 came into force, 5 is the k of that day; 8 waits for the day after.
    assert (later.k_on(TOMORROW), later.k_on(TOMORROW + timedelta(days=1))) == (5, 8)

    restarted = AccountStore(store)
    await restarted.load()
    assert restarted.by_id(account.account_id) == later


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        ({"origins": []}, "origins"),
        ({"k": 1}, "k"),
        ({"k": True}, "k"),
        ({"retention_days": 0}, "retention_days"),
        ({"name": " "}, "name"),
        ({"streams": ["a*"]}, "streams"),
        ({"stream_patterns": ["*"]}, "stream_patterns"),
        ({}, "body"),
    ],
    ids=["no-origins", "k-1", "k-bool", "retention-0", "blank-name", "wild-stream",
         "bare-pattern", "nothing"],
)  # fmt: skip
async def test_bad_changes_are_refused_and_change_nothing(
    accounts: AccountStore, arguments: dict[str, Any], key: str
) -> None:
    account, _ = await accounts.create("League", ["*"], k=10)
    with pytest.raises(BadRequest) as caught:
        await accounts.update(account.account_id, today=TODAY, **arguments)
    assert caught.value.extra["key"] == key
    assert accounts.by_id(account.account_id) == account


async def test_an_account_without_origins_is_refused_with_the_reason(
    accounts: AccountStore,
) -> None:
    with pytest.raises(BadRequest, match=r"^origins: at least one .*Origin.*\*") as caught:
        await accounts.create("Nowhere", [])
    assert caught.value.extra["key"] == "origins"
    assert accounts.accounts() == []


async def test_unknown_and_deleted_accounts_cannot_change(accounts: AccountStore) -> None:
    with pytest.raises(NotFound):
        await accounts.update("acc_0000000000000000", today=TODAY, name="x")
    account, _ = await accounts.create("Gone", ["*"])
    await accounts.mark_deleted(account.account_id)
    with pytest.raises(Gone):
        await accounts.update(account.account_id, today=TODAY, name="back")
