"""AccountStore: accounts and API tokens in ClickHouse, looked up from memory."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.storage.accounts_store import AccountStore
from aggregator.storage.migrate import migrate
from aggregator.storage.store import Store
from collector.accounts import AccountDirectory
from collector.errors import BadRequest, NotFound


@pytest.fixture
async def accounts(store: Store) -> AccountStore:
    await migrate(store)
    directory = AccountStore(store)
    await directory.load()
    return directory


@pytest.fixture
async def http_accounts(
    ch_database: tuple[str, str], tmp_path: Path
) -> AsyncIterator[AccountStore]:
    """For checks that do not depend on the backend (validation happens before any write)."""
    url, database = ch_database
    store = await Store.connect(url=url, data_dir=tmp_path, database=database)
    try:
        await migrate(store)
        directory = AccountStore(store)
        await directory.load()
        yield directory
    finally:
        await store.close()


async def test_create_then_look_up(accounts: AccountStore) -> None:
    account, token = await accounts.create("Example TV", ["https://example.com"])
    assert re.fullmatch(r"acc_[0-9a-f]{16}", account.account_id)
    assert re.fullmatch(r"ek_[A-Za-z0-9_-]{24}", account.embed_key)
    assert re.fullmatch(r"st_[A-Za-z0-9_-]{32}", token)
    assert (account.name, account.origins, account.k, account.retention_days) == (
        "Example TV",
        ("https://example.com",),
        10,
        762,
    )
    assert not account.deleted
    assert accounts.by_embed_key(account.embed_key) == account
    assert accounts.by_id(account.account_id) == account
    assert accounts.by_embed_key("ek_unknown") is None
    assert accounts.by_id("acc_unknown") is None
    directory: AccountDirectory = accounts  # the collector's view of it
    assert directory.by_embed_key(account.embed_key) is account


async def test_accounts_are_independent(accounts: AccountStore) -> None:
    first, first_token = await accounts.create("One", ["*"], k=5)
    second, second_token = await accounts.create("Two", ["http://localhost:8080"], k=20)
    assert len({first.account_id, second.account_id}) == 2
    assert len({first.embed_key, second.embed_key}) == 2
    assert first_token != second_token
    assert await accounts.verify_token(first_token) == first
    assert await accounts.verify_token(second_token) == second


async def test_verify_token(accounts: AccountStore) -> None:
    account, token = await accounts.create("Example TV", ["https://example.com"])
    assert await accounts.verify_token(token) == account
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")  # same shown prefix
    for wrong in (flipped, token + "x", token[:-1], "", "st_" + "a" * 32, account.embed_key):
        assert await accounts.verify_token(wrong) is None


async def test_tokens_are_stored_only_as_hashes(accounts: AccountStore, store: Store) -> None:
    _, token = await accounts.create("Example TV", ["https://example.com"])
    dumped: list[str] = []
    for table in ("accounts", "api_tokens"):
        rows = await store.query_rows("SELECT * FROM {t:Identifier}", {"t": table})
        dumped.extend(repr(value) for row in rows for value in row)
    everything = "\n".join(dumped)
    assert token not in everything
    assert token[len("st_") :] not in everything
    assert hashlib.sha256(token.encode()).hexdigest() in everything
    token_rows = await store.query_dicts("SELECT prefix, token_hash FROM api_tokens")
    assert token_rows == [
        {"prefix": token[:8], "token_hash": hashlib.sha256(token.encode()).hexdigest()}
    ]


async def test_a_new_store_after_restart_sees_the_same_accounts(
    accounts: AccountStore, store: Store
) -> None:
    kept, token = await accounts.create(
        "Kept", ["https://a.example", "https://b.example:8443"], k=3
    )
    gone, gone_token = await accounts.create("Gone", ["*"])
    await accounts.mark_deleted(gone.account_id)

    restarted = AccountStore(store)
    assert restarted.by_id(kept.account_id) is None  # nothing until load
    await restarted.load()
    assert restarted.by_embed_key(kept.embed_key) == kept
    assert restarted.by_id(gone.account_id) == dataclasses.replace(gone, deleted=True)
    assert await restarted.verify_token(token) == kept
    assert await restarted.verify_token(gone_token) is None


async def test_embedded_store_keeps_accounts_across_reopening(tmp_path: Path) -> None:
    store = await Store.connect(url=None, data_dir=tmp_path)
    try:
        await migrate(store)
        account, token = await AccountStore(store).create("Example TV", ["https://example.com"])
    finally:
        await store.close()
    reopened = await Store.connect(url=None, data_dir=tmp_path)
    try:
        directory = AccountStore(reopened)
        await directory.load()
        assert directory.by_embed_key(account.embed_key) == account
        assert await directory.verify_token(token) == account
    finally:
        await reopened.close()


async def test_mark_deleted(accounts: AccountStore) -> None:
    account, token = await accounts.create("Example TV", ["https://example.com"])
    other, other_token = await accounts.create("Other", ["https://other.example"])
    await accounts.mark_deleted(account.account_id)

    deleted = accounts.by_embed_key(account.embed_key)
    assert deleted is not None
    assert deleted.deleted  # reports for it get 410, not 404
    assert deleted.account_id == account.account_id
    assert await accounts.verify_token(token) is None
    assert await accounts.verify_token(other_token) == other  # others untouched
    assert accounts.by_embed_key(other.embed_key) == other

    await accounts.mark_deleted(account.account_id)  # twice is harmless
    assert accounts.by_id(account.account_id) == deleted


async def test_mark_deleted_unknown_account(accounts: AccountStore) -> None:
    with pytest.raises(NotFound):
        await accounts.mark_deleted("acc_0000000000000000")


async def test_deletion_revokes_tokens_and_keeps_no_hash(
    accounts: AccountStore, store: Store
) -> None:
    account, _ = await accounts.create("Example TV", ["https://example.com"])
    await accounts.mark_deleted(account.account_id)
    rows = await store.query_dicts(
        "SELECT token_hash, revoked FROM api_tokens FINAL WHERE account_id = {id:String}",
        {"id": account.account_id},
    )
    assert rows == [{"token_hash": "", "revoked": 1}]
    # Every version of the account and of the token keeps its creation time.
    for table in ("accounts", "api_tokens"):
        created = await store.query_rows(
            "SELECT count(), uniqExact(created_at) FROM {t:Identifier} "
            "WHERE account_id = {id:String}",
            {"t": table, "id": account.account_id},
        )
        assert created == [(2, 1)]


@pytest.mark.parametrize(
    "k",
    [
        pytest.param(1, id="one"),
        pytest.param(0, id="zero"),
        pytest.param(-3, id="negative"),
        pytest.param(256, id="too-big"),
        pytest.param(True, id="bool"),
        pytest.param("10", id="string"),
        pytest.param(2.5, id="float"),
    ],
)
async def test_k_outside_2_to_255_is_refused(http_accounts: AccountStore, k: Any) -> None:
    with pytest.raises(BadRequest, match=r"^k: ") as caught:
        await http_accounts.create("Example TV", ["https://example.com"], k=k)
    assert caught.value.extra["key"] == "k"
    assert http_accounts.accounts() == []


@pytest.mark.parametrize("k", [2, 255])
async def test_k_bounds_are_allowed(http_accounts: AccountStore, k: int) -> None:
    account, _ = await http_accounts.create("Example TV", ["https://example.com"], k=k)
    assert account.k == k


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("example.com", id="no-scheme"),
        pytest.param("ftp://example.com", id="ftp"),
        pytest.param("https://example.com/player", id="path"),
        pytest.param("https://example.com?x=1", id="query"),
        pytest.param("https://example.com#top", id="fragment"),
        pytest.param("https://user@example.com", id="userinfo"),
        pytest.param("https://", id="no-host"),
        pytest.param("https://example.com:99999", id="bad-port"),
        pytest.param("https://exa mple.com", id="space"),
        pytest.param("", id="empty"),
        pytest.param("**", id="stars"),
    ],
)
async def test_bad_origins_are_refused(http_accounts: AccountStore, origin: str) -> None:
    with pytest.raises(BadRequest, match=r"^origins\[1\]: ") as caught:
        await http_accounts.create("Example TV", ["https://ok.example", origin])
    assert caught.value.extra["key"] == "origins"
    assert http_accounts.accounts() == []


async def test_origins_must_be_a_list(http_accounts: AccountStore) -> None:
    with pytest.raises(BadRequest, match="origins"):
        await http_accounts.create("Example TV", "https://example.com")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        pytest.param("https://example.com", "https://example.com", id="plain"),
        pytest.param("HTTPS://Example.COM/", "https://example.com", id="case-and-slash"),
        pytest.param("http://localhost:8080", "http://localhost:8080", id="port"),
        pytest.param("https://[::1]:8443", "https://[::1]:8443", id="ipv6"),
        pytest.param("*", "*", id="any"),
    ],
)
async def test_good_origins_are_normalised(
    http_accounts: AccountStore, given: str, stored: str
) -> None:
    account, _ = await http_accounts.create("Example TV", [given])
    assert account.origins == (stored,)
    if stored != "*":
        assert account.allows_origin(stored)
        assert not account.allows_origin("https://elsewhere.example")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": "x" * 201}, "name", id="long-name"),
        pytest.param({"retention_days": 0}, "retention_days", id="no-retention"),
        pytest.param({"retention_days": 70000}, "retention_days", id="retention-overflow"),
    ],
)
async def test_other_fields_are_validated(
    http_accounts: AccountStore, kwargs: dict[str, Any], key: str
) -> None:
    arguments: dict[str, Any] = {"name": "Example TV", "origins": ["*"], **kwargs}
    with pytest.raises(BadRequest) as caught:
        await http_accounts.create(**arguments)
    assert caught.value.extra["key"] == key


async def test_declared_streams_are_kept_across_a_restart(
    accounts: AccountStore, store: Store
) -> None:
    account, _ = await accounts.create(
        "League",
        ["*"],
        streams=["final-4915112345678", "final-4915112345678", "semi"],
        stream_patterns=["match-*"],
    )
    assert (account.streams, account.stream_patterns) == (
        ("final-4915112345678", "semi"),
        ("match-*",),
    )
    restarted = AccountStore(store)
    await restarted.load()
    found = restarted.by_embed_key(account.embed_key)
    assert found == account
    assert found is not None
    assert found.declares_stream("match-20240115")


async def test_a_tombstone_keeps_no_declared_stream(accounts: AccountStore, store: Store) -> None:
    account, _ = await accounts.create("League", ["*"], streams=["final-4915112345678"])
    await accounts.tombstone(account.account_id)
    stone = accounts.by_id(account.account_id)
    assert stone is not None
    assert (stone.streams, stone.stream_patterns) == ((), ())
    rows = await store.query_rows(
        "SELECT streams FROM accounts FINAL WHERE account_id = {id:String}",
        {"id": account.account_id},
    )
    assert [list(row[0]) for row in rows] == [[]]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        pytest.param({"streams": "final"}, "streams", id="streams-not-a-list"),
        pytest.param({"streams": [""]}, "streams", id="empty-name"),
        pytest.param({"streams": ["x" * 129]}, "streams", id="name-too-long"),
        pytest.param({"streams": ["caf\u00e9"]}, "streams", id="not-ascii"),
        pytest.param({"streams": [" final"]}, "streams", id="padded"),
        pytest.param({"streams": ["match-*"]}, "streams", id="wildcard-in-a-name"),
        pytest.param({"streams": [7]}, "streams", id="not-a-string"),
        pytest.param({"stream_patterns": ["*"]}, "stream_patterns", id="star-alone"),
        pytest.param({"stream_patterns": ["a*?"]}, "stream_patterns", id="too-few-literals"),
        pytest.param({"stream_patterns": ["p"] * 101}, "stream_patterns", id="too-many"),
    ],
)
async def test_declared_streams_are_validated(
    http_accounts: AccountStore, kwargs: dict[str, Any], key: str
) -> None:
    arguments: dict[str, Any] = {"name": "League", "origins": ["*"], **kwargs}
    with pytest.raises(BadRequest) as caught:
        await http_accounts.create(**arguments)
    assert caught.value.extra["key"] == key
