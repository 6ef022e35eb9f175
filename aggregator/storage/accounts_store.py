"""Accounts and API tokens in ClickHouse, served from memory.

Implements :class:`collector.accounts.AccountDirectory`. Every change is a new row version
(tables ``accounts`` and ``api_tokens``, ReplacingMergeTree, read with FINAL); lookups hit
in-memory maps filled by :meth:`AccountStore.load` and kept current by this store's own
writes (call ``load`` again to see writes made by another process).

API tokens are ``st_`` + 32 random URL-safe characters. Only their SHA-256 (hex) is kept,
on disk and in memory, with the first 8 characters as a non-secret ``prefix``. Tokens are
created, listed (never with their hash), rotated and revoked per account; a revoked row keeps
no hash.

A purged account leaves a tombstone (:meth:`AccountStore.tombstone`): its id, ``deleted = 1``
and the SHA-256 of its embed key (``sha256:<hex>``) — no name, origins, declared streams or
embed key — so that reports for it still get 410 after a restart, not 404.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aggregator.release.noise import DEFAULT_DELTA, DEFAULT_EPSILON_PER_DAY
from aggregator.storage.store import Store
from collector.accounts import Account
from collector.errors import BadRequest, Gone, NotFound

TOKEN_PREFIX = "st_"
TOKEN_LENGTH = len(TOKEN_PREFIX) + 32
SHOWN_PREFIX_LENGTH = 8
MIN_K, MAX_K = 2, 255
MAX_RETENTION_DAYS = 65535  # UInt16
MAX_NAME_LENGTH = 200
MAX_STREAM_CHARS = 128  # CTA-5004: a cid is at most 128 characters
MAX_DECLARED_STREAMS = 10_000
MAX_STREAM_PATTERNS = 100
MIN_PATTERN_LITERALS = 3  # "*" alone, or "a*", would vouch for any name
NO_DAY = date(1970, 1, 1)  # next_k_from of an account with no k change pending
CHANGEABLE = ("name", "origins", "k", "retention_days", "streams", "stream_patterns")
NO_ORIGINS = (
    "origins: at least one origin is needed: browsers send an Origin header with every "
    "report and a report whose Origin is not listed is refused (403), so an account without "
    'origins would count nothing from any web page; list the player pages\' origins, or "*" '
    "to accept reports from any page"
)

_ACCOUNT_COLUMNS = (
    "account_id",
    "name",
    "embed_key",
    "origins",
    "streams",
    "stream_patterns",
    "k",
    "next_k",
    "next_k_from",
    "retention_days",
    "privacy",
    "epsilon_per_day",
    "delta",
    "privacy_from",
    "deleted",
    "created_at",
    "version",
)
_TOKEN_COLUMNS = (
    "account_id",
    "token_id",
    "prefix",
    "token_hash",
    "created_at",
    "revoked",
    "version",
)


TOMBSTONE_EMBED_PREFIX = "sha256:"
# A row of `accounts` that is a purged account's tombstone (and holds nothing else of it).
TOMBSTONE_SQL = (
    "deleted = 1 AND name = '' AND empty(origins) AND empty(streams) AND empty(stream_patterns) "
    "AND startsWith(embed_key, 'sha256:')"
)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What may be shown of an API token: never its hash, never the token itself."""

    token_id: str
    prefix: str
    created_at: datetime
    revoked: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "prefix": self.prefix,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "revoked": self.revoked,
        }


@dataclass(frozen=True, slots=True)
class _Token:
    account_id: str
    token_id: str
    prefix: str
    token_hash: str
    created_at: datetime


def hash_token(token: str) -> str:
    """SHA-256 hex of an API token: the only form in which tokens are stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def hash_embed_key(embed_key: str) -> str:
    """How a purged account's embed key is kept in its tombstone."""
    return TOMBSTONE_EMBED_PREFIX + hashlib.sha256(embed_key.encode("utf-8")).hexdigest()


def token_prefix(token: str) -> str:
    """The shown, non-secret start of an API token (what the audit log names as actor)."""
    return token[:SHOWN_PREFIX_LENGTH]


def normalise_origin(origin: str, index: int) -> str:
    """``http(s)://host[:port]`` in lowercase, or ``*``; else BadRequest naming the entry."""
    if not isinstance(origin, str):
        raise BadRequest(f"origins[{index}]: must be a string", key="origins")
    text = origin.strip()
    if text == "*":
        return text
    problem = f"origins[{index}]: must be http(s)://host[:port] (no path) or *"
    try:
        parts = urlsplit(text.lower())
        port = parts.port
    except ValueError:
        raise BadRequest(problem, key="origins") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "?" in text
        or "#" in text
        or any(c.isspace() for c in text)
    ):
        raise BadRequest(problem, key="origins")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _declared(values: object, key: str, limit: int, pattern: bool) -> tuple[str, ...]:
    """Declared stream names (or glob patterns) as sent, deduplicated; else BadRequest.

    A name is 1 to 128 printable ASCII characters (what a CMCD string can hold) without
    ``*`` or ``?``; a pattern may hold ``*`` and ``?`` and has at least three other characters."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise BadRequest(f"{key}: must be a list of strings", key=key)
    if len(values) > limit:
        raise BadRequest(f"{key}: at most {limit} entries", key=key)
    what = "a pattern" if pattern else "a stream name"
    for i, value in enumerate(values):
        if (
            not isinstance(value, str)
            or not 1 <= len(value) <= MAX_STREAM_CHARS
            or not all(" " <= c <= "~" for c in value)
            or value != value.strip()
        ):
            raise BadRequest(
                f"{key}[{i}]: {what} is 1 to {MAX_STREAM_CHARS} printable ASCII characters",
                key=key,
            )
        wild = sum(c in "*?" for c in value)
        if not pattern and wild:
            raise BadRequest(f"{key}[{i}]: * and ? belong in stream_patterns", key=key)
        if pattern and len(value) - wild < MIN_PATTERN_LITERALS:
            raise BadRequest(
                f"{key}[{i}]: a pattern needs at least {MIN_PATTERN_LITERALS} characters "
                "besides * and ?",
                key=key,
            )
    return tuple(dict.fromkeys(values))


PRIVACY_MODES = ("k", "dp")
MAX_EPSILON_PER_DAY = 20.0
MAX_DELTA = 1e-3


def next_utc_day(now: float) -> int:
    """Unix seconds of the start of the UTC day after ``now``: when a privacy setting
    starts to apply."""
    return int(now) - int(now) % 86_400 + 86_400


def check_privacy(value: object) -> tuple[str, float, float]:
    """(mode, epsilon_per_day, delta) from a request's ``privacy`` object; else BadRequest.

    None or ``{"mode": "k"}``: k mode. ``{"mode": "dp"}`` takes the defaults of
    aggregator/release/noise.py for what it leaves out."""
    if value is None:
        return "k", 0.0, 0.0
    if not isinstance(value, dict) or set(value) - {"mode", "epsilon_per_day", "delta"}:
        raise BadRequest(
            "privacy: an object with mode ('k' or 'dp'), epsilon_per_day and delta",
            key="privacy",
        )
    mode = value.get("mode", "k")
    if mode not in PRIVACY_MODES:
        raise BadRequest("privacy.mode: 'k' or 'dp'", key="privacy")
    if mode == "k":
        if len(value) > 1:
            raise BadRequest("privacy: epsilon_per_day and delta go with mode 'dp'", key="privacy")
        return "k", 0.0, 0.0
    eps = value.get("epsilon_per_day", DEFAULT_EPSILON_PER_DAY)
    delta = value.get("delta", DEFAULT_DELTA)
    limits = (("epsilon_per_day", eps, MAX_EPSILON_PER_DAY), ("delta", delta, MAX_DELTA))
    for name, v, high in limits:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= high:
            raise BadRequest(f"privacy.{name}: a number above 0, at most {high}", key="privacy")
    return "dp", float(eps), float(delta)


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME_LENGTH:
        raise BadRequest(f"name: must be 1 to {MAX_NAME_LENGTH} characters", key="name")
    return name.strip()


def _check_origins(origins: object) -> tuple[str, ...]:
    if isinstance(origins, str) or not isinstance(origins, Sequence):
        raise BadRequest("origins: must be a list of origins", key="origins")
    if not origins:
        raise BadRequest(NO_ORIGINS, key="origins")
    return tuple(dict.fromkeys(normalise_origin(origin, i) for i, origin in enumerate(origins)))


def utc_today() -> date:
    return datetime.now(UTC).date()


def _check_int(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{key}: must be an integer from {low} to {high}", key=key)
    return value


class AccountStore:
    """The account directory: ClickHouse for durability, dictionaries for lookups."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_id: dict[str, Account] = {}
        self._by_embed_key: dict[str, Account] = {}
        self._tombstones: dict[str, Account] = {}  # by hash_embed_key(embed key)
        self._tokens_by_prefix: dict[str, list[_Token]] = {}
        self._last_version = 0
        # Loads and writes take turns, so a load never drops a write made while it ran.
        self._writing = asyncio.Lock()

    # ---- reads (memory only) ----------------------------------------------------------------

    def by_embed_key(self, embed_key: str) -> Account | None:
        """The account for a public embed key, deleted ones included (flagged); no I/O.

        A purged account is found through the hash its tombstone keeps (one SHA-256, only
        for keys not found otherwise and only while tombstones exist)."""
        found = self._by_embed_key.get(embed_key)
        if found is None and self._tombstones and not embed_key.startswith("sha256:"):
            found = self._tombstones.get(hash_embed_key(embed_key))
        return found

    def by_id(self, account_id: str) -> Account | None:
        return self._by_id.get(account_id)

    def accounts(self) -> list[Account]:
        """Every known account, deleted ones included."""
        return list(self._by_id.values())

    @property
    def version(self) -> int:
        """The newest version of any account or token row known here (grows with changes)."""
        return self._last_version

    async def verify_token(self, token: str) -> Account | None:
        """The live account an API token belongs to, or None (unknown, revoked, deleted)."""
        if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
            return None
        digest = hash_token(token)
        found: Account | None = None
        for candidate in self._tokens_by_prefix.get(token[:SHOWN_PREFIX_LENGTH], ()):
            if hmac.compare_digest(candidate.token_hash, digest):
                found = self._by_id.get(candidate.account_id)
        if found is None or found.deleted:
            return None
        return found

    # ---- load and writes ----------------------------------------------------------------------

    async def load(self) -> None:
        """Read every account and live token from ClickHouse, replacing what is in memory."""
        async with self._writing:
            await self._load()

    async def _load(self) -> None:
        account_rows = await self._store.query_dicts(
            "SELECT account_id, name, embed_key, origins, streams, stream_patterns, k, next_k, "
            "next_k_from, retention_days, privacy, epsilon_per_day, delta, "
            "toUInt32(toDateTime(privacy_from)) AS privacy_from, deleted, version "
            "FROM accounts FINAL"
        )
        token_rows = await self._store.query_dicts(
            "SELECT account_id, token_id, prefix, token_hash, created_at, version "
            "FROM api_tokens FINAL WHERE revoked = 0"
        )
        by_id = {row["account_id"]: _account_from_row(row) for row in account_rows}
        tombstones = {a.embed_key: a for a in by_id.values() if _is_tombstone(a)}
        tokens: dict[str, list[_Token]] = {}
        for row in token_rows:
            token = _Token(
                row["account_id"],
                row["token_id"],
                row["prefix"],
                row["token_hash"],
                _utc(row["created_at"]),
            )
            tokens.setdefault(token.prefix, []).append(token)
        versions = [int(row["version"]) for row in (*account_rows, *token_rows)]
        self._last_version = max([self._last_version, *versions])
        self._by_id = by_id
        self._by_embed_key = {a.embed_key: a for a in by_id.values() if not _is_tombstone(a)}
        self._tombstones = tombstones
        self._tokens_by_prefix = tokens

    async def create(
        self,
        name: str,
        origins: Sequence[str],
        k: int = 10,
        retention_days: int = 762,
        streams: Sequence[str] = (),
        stream_patterns: Sequence[str] = (),
        privacy: object = None,
    ) -> tuple[Account, str]:
        """A new account and its first API token (plaintext, shown once; only its hash is kept).

        ``streams`` and ``stream_patterns`` are the stream names the publisher declares
        (kept as sent, see ``collector.accounts.Account.declares_stream``). ``privacy``:
        None (k mode) or ``{"mode": "k"|"dp", "epsilon_per_day": ..., "delta": ...}``
        (:func:`check_privacy`); dp applies from the next UTC day."""
        mode, epsilon, delta = check_privacy(privacy)
        clean_name = _check_name(name)
        clean_origins = _check_origins(origins)
        k = _check_int(k, "k", MIN_K, MAX_K)
        retention_days = _check_int(retention_days, "retention_days", 1, MAX_RETENTION_DAYS)
        declared = _declared(streams, "streams", MAX_DECLARED_STREAMS, pattern=False)
        patterns = _declared(stream_patterns, "stream_patterns", MAX_STREAM_PATTERNS, pattern=True)

        async with self._writing:
            return await self._create(
                clean_name,
                clean_origins,
                k,
                retention_days,
                declared,
                patterns,
                (mode, epsilon, delta),
            )

    async def _create(
        self,
        name: str,
        origins: tuple[str, ...],
        k: int,
        retention_days: int,
        streams: tuple[str, ...],
        stream_patterns: tuple[str, ...],
        privacy: tuple[str, float, float] = ("k", 0.0, 0.0),
    ) -> tuple[Account, str]:
        account_id = "acc_" + secrets.token_hex(8)
        embed_key = "ek_" + secrets.token_urlsafe(18)  # 24 characters
        while account_id in self._by_id or embed_key in self._by_embed_key:
            account_id = "acc_" + secrets.token_hex(8)
            embed_key = "ek_" + secrets.token_urlsafe(18)
        account = Account(
            account_id=account_id,
            name=name,
            embed_key=embed_key,
            origins=origins,
            k=k,
            retention_days=retention_days,
            streams=streams,
            stream_patterns=stream_patterns,
            privacy=privacy[0],
            epsilon_per_day=privacy[1],
            delta=privacy[2],
            privacy_from=next_utc_day(time.time()) if privacy[0] == "dp" else 0,
        )
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(24)  # 32 characters
        now = datetime.now(UTC)
        token = _Token(
            account_id,
            "tok_" + secrets.token_hex(8),
            plaintext[:SHOWN_PREFIX_LENGTH],
            hash_token(plaintext),
            now,
        )
        # The token first: a failure in between leaves an unusable token, not a tokenless account.
        await self._write_token(token, revoked=False)
        await self._write_account(account, created_at=now)
        self._remember(account)
        self._tokens_by_prefix.setdefault(token.prefix, []).append(token)
        return account, plaintext

    async def update(
        self, account_id: str, *, today: date | None = None, **changes: Any
    ) -> tuple[Account, dict[str, Any]]:
        """Change a live account's name, origins, retention or declared streams now, and its k
        from the UTC day after ``today`` (default: today), so that no window is released
        under two k. Answers the account as changed and a summary for the audit log (which
        fields changed, counts and k; never the name, origins or stream names)."""
        today = utc_today() if today is None else today
        unknown = sorted(set(changes) - set(CHANGEABLE))
        if unknown:
            raise BadRequest(
                f"{unknown[0]}: not a field that can change (choose from {', '.join(CHANGEABLE)})",
                key=unknown[0],
            )
        if not changes:
            raise BadRequest(f"nothing to change: give one of {', '.join(CHANGEABLE)}", key="body")
        clean: dict[str, Any] = {}
        if "name" in changes:
            clean["name"] = _check_name(changes["name"])
        if "origins" in changes:
            clean["origins"] = _check_origins(changes["origins"])
        if "k" in changes:
            clean["k"] = _check_int(changes["k"], "k", MIN_K, MAX_K)
        if "retention_days" in changes:
            clean["retention_days"] = _check_int(
                changes["retention_days"], "retention_days", 1, MAX_RETENTION_DAYS
            )
        if "streams" in changes:
            clean["streams"] = _declared(
                changes["streams"], "streams", MAX_DECLARED_STREAMS, pattern=False
            )
        if "stream_patterns" in changes:
            clean["stream_patterns"] = _declared(
                changes["stream_patterns"], "stream_patterns", MAX_STREAM_PATTERNS, pattern=True
            )
        async with self._writing:
            account = self._by_id.get(account_id)
            if account is None:
                await self._load()  # perhaps created by another process
            account = self._live(account_id)
            return await self._update(account, clean, today)

    async def _update(
        self, account: Account, clean: dict[str, Any], today: date
    ) -> tuple[Account, dict[str, Any]]:
        # The k in force today stays today's k; a pending k whose day has come is k now.
        k_today = account.k_on(today)
        k_fields: dict[str, Any] = {"k": k_today, "next_k": 0, "next_k_from": None}
        if account.next_k and account.next_k_from is not None and account.next_k_from > today:
            k_fields = {"k": k_today, "next_k": account.next_k, "next_k_from": account.next_k_from}
        summary: dict[str, Any] = {"changed": sorted(clean)}
        if "k" in clean:
            wanted = clean.pop("k")
            if wanted == k_today:
                k_fields = {"k": k_today, "next_k": 0, "next_k_from": None}
            else:
                k_fields = {"k": k_today, "next_k": wanted, "next_k_from": today + timedelta(1)}
            summary["k"] = {
                "now": k_today,
                "next": k_fields["next_k"] or k_today,
                "from": (k_fields["next_k_from"] or today).isoformat(),
            }
        for key in ("origins", "streams", "stream_patterns"):
            if key in clean:
                summary[key] = len(clean[key])
        if "retention_days" in clean:
            summary["retention_days"] = clean["retention_days"]
        changed = dataclasses.replace(account, **clean, **k_fields)
        await self._write_account(changed, created_at=await self._created_at(account.account_id))
        self._remember(changed)
        return changed, summary

    async def restore(self, account: Account) -> None:
        """Write an earlier state of a live account back (a change that could not be put on
        record in the audit log is undone)."""
        async with self._writing:
            if self._live(account.account_id) == account:
                return
            created_at = await self._created_at(account.account_id)
            await self._write_account(account, created_at=created_at)
            self._remember(account)

    async def _created_at(self, account_id: str) -> datetime:
        created = await self._store.query_rows(
            "SELECT min(created_at) FROM accounts WHERE account_id = {id:String}",
            {"id": account_id},
        )
        return _utc(created[0][0]) if created and created[0][0] else datetime.now(UTC)

    async def mark_deleted(self, account_id: str) -> None:
        """Flag the account deleted (reports then get 410) and revoke all its tokens."""
        async with self._writing:
            await self._mark_deleted(account_id)

    async def _mark_deleted(self, account_id: str) -> None:
        account = self._by_id.get(account_id)
        if account is None:
            await self._load()  # perhaps created by another process
            account = self._by_id.get(account_id)
        if account is None:
            raise NotFound("no such account", key="account_id")
        created = await self._store.query_rows(
            "SELECT created_at FROM accounts FINAL WHERE account_id = {id:String}",
            {"id": account_id},
        )
        created_at = _utc(created[0][0]) if created else datetime.now(UTC)
        live = await self._store.query_dicts(
            "SELECT account_id, token_id, prefix, created_at FROM api_tokens FINAL "
            "WHERE account_id = {id:String} AND revoked = 0",
            {"id": account_id},
        )
        for row in live:  # revoked rows keep no hash
            revoked = _Token(
                row["account_id"], row["token_id"], row["prefix"], "", _utc(row["created_at"])
            )
            await self._write_token(revoked, revoked=True)
        deleted = dataclasses.replace(account, deleted=True)
        if not _is_tombstone(account):  # a tombstone stays as it is
            await self._write_account(deleted, created_at=created_at)
        if not _is_tombstone(account):
            self._remember(deleted)
        self._drop_tokens(lambda token: token.account_id == account_id)

    async def tombstone(self, account_id: str) -> None:
        """Replace a deleted account by its tombstone: id, deleted=1, SHA-256 of the embed key.

        Older versions of the account row (name, origins, embed key) are still on disk until
        the purge deletes every row of the account that is not a tombstone (``TOMBSTONE_SQL``).
        """
        async with self._writing:
            account = self._by_id.get(account_id)
            if account is None:
                await self._load()
                account = self._by_id.get(account_id)
            if account is None:
                raise NotFound("no such account", key="account_id")
            if not account.deleted:
                await self._mark_deleted(account_id)
                account = self._by_id[account_id]
            if _is_tombstone(account):
                return
            created = await self._store.query_rows(
                "SELECT min(created_at) FROM accounts WHERE account_id = {id:String}",
                {"id": account_id},
            )
            created_at = _utc(created[0][0]) if created else datetime.now(UTC)
            stone = dataclasses.replace(
                account,
                name="",
                origins=(),
                streams=(),
                stream_patterns=(),
                next_k=0,
                next_k_from=None,
                embed_key=hash_embed_key(account.embed_key),
                privacy="k",  # a tombstone keeps no settings
                epsilon_per_day=0.0,
                delta=0.0,
                privacy_from=0,
            )
            await self._write_account(stone, created_at=created_at)
            self._by_embed_key.pop(account.embed_key, None)
            self._by_id[account_id] = stone
            self._tombstones[stone.embed_key] = stone

    def forget_in_memory(self, account_id: str) -> None:
        """Flag an account deleted and drop its tokens, in memory only (a purge resuming
        while ClickHouse is away still answers 410 and refuses the account's tokens)."""
        account = self._by_id.get(account_id)
        if account is not None and not account.deleted:
            self._remember(dataclasses.replace(account, deleted=True))
        self._drop_tokens(lambda token: token.account_id == account_id)

    # ---- tokens ---------------------------------------------------------------------------------

    def _live(self, account_id: str) -> Account:
        account = self._by_id.get(account_id)
        if account is None:
            raise NotFound("no such account", key="account_id")
        if account.deleted:
            raise Gone("the account is deleted", key="account_id")
        return account

    async def list_tokens(self, account_id: str) -> list[TokenInfo]:
        """Every token of a live account, revoked ones included, oldest first; no hashes."""
        self._live(account_id)
        rows = await self._store.query_dicts(
            "SELECT token_id, prefix, created_at, revoked FROM api_tokens FINAL "
            "WHERE account_id = {id:String} ORDER BY created_at, token_id",
            {"id": account_id},
        )
        return [
            TokenInfo(r["token_id"], r["prefix"], _utc(r["created_at"]), bool(r["revoked"]))
            for r in rows
        ]

    async def create_token(self, account_id: str) -> tuple[TokenInfo, str]:
        """A new API token for a live account: its info and the plaintext (shown once)."""
        async with self._writing:
            self._live(account_id)
            return await self._new_token(account_id)

    async def revoke_token(self, account_id: str, token_id: str) -> TokenInfo:
        """Revoke one token of the account (its hash is dropped); NotFound if not its token."""
        async with self._writing:
            self._live(account_id)
            return await self._revoke(account_id, token_id)

    async def rotate_token(self, account_id: str, token_id: str) -> tuple[TokenInfo, str]:
        """A new token in place of a live one: the new one is written before the old is revoked."""
        async with self._writing:
            self._live(account_id)
            current = await self._token_row(account_id, token_id)
            if current is None or current["revoked"]:
                raise NotFound("no such live token of this account", key="token_id")
            info, plaintext = await self._new_token(account_id)
            await self._revoke(account_id, token_id)
            return info, plaintext

    async def _token_row(self, account_id: str, token_id: str) -> dict[str, Any] | None:
        rows = await self._store.query_dicts(
            "SELECT account_id, token_id, prefix, created_at, revoked FROM api_tokens FINAL "
            "WHERE account_id = {id:String} AND token_id = {tid:String}",
            {"id": account_id, "tid": token_id},
        )
        return rows[0] if rows else None

    async def _new_token(self, account_id: str) -> tuple[TokenInfo, str]:
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(24)  # 32 characters
        token = _Token(
            account_id,
            "tok_" + secrets.token_hex(8),
            token_prefix(plaintext),
            hash_token(plaintext),
            datetime.now(UTC),
        )
        await self._write_token(token, revoked=False)
        self._tokens_by_prefix.setdefault(token.prefix, []).append(token)
        return TokenInfo(token.token_id, token.prefix, token.created_at, False), plaintext

    async def _revoke(self, account_id: str, token_id: str) -> TokenInfo:
        row = await self._token_row(account_id, token_id)
        if row is None:
            raise NotFound("no such token of this account", key="token_id")
        info = TokenInfo(row["token_id"], row["prefix"], _utc(row["created_at"]), True)
        if not row["revoked"]:
            revoked = _Token(account_id, token_id, info.prefix, "", info.created_at)
            await self._write_token(revoked, revoked=True)
        self._drop_tokens(lambda t: t.account_id == account_id and t.token_id == token_id)
        return info

    # ---- internals ------------------------------------------------------------------------------

    def _drop_tokens(self, doomed: Callable[[_Token], bool]) -> None:
        for prefix, tokens in list(self._tokens_by_prefix.items()):
            kept = [token for token in tokens if not doomed(token)]
            if kept:
                self._tokens_by_prefix[prefix] = kept
            else:
                del self._tokens_by_prefix[prefix]

    def _next_version(self) -> int:
        self._last_version = max(time.time_ns(), self._last_version + 1)
        return self._last_version

    def _remember(self, account: Account) -> None:
        self._by_id[account.account_id] = account
        self._by_embed_key[account.embed_key] = account

    async def _write_account(self, account: Account, *, created_at: datetime) -> None:
        row: list[Any] = [
            account.account_id,
            account.name,
            account.embed_key,
            list(account.origins),
            list(account.streams),
            list(account.stream_patterns),
            account.k,
            account.next_k,
            account.next_k_from or NO_DAY,
            account.retention_days,
            account.privacy,
            account.epsilon_per_day,
            account.delta,
            datetime.fromtimestamp(account.privacy_from, UTC).date(),
            int(account.deleted),
            created_at,
            self._next_version(),
        ]
        await self._store.insert("accounts", [row], column_names=_ACCOUNT_COLUMNS)

    async def _write_token(self, token: _Token, *, revoked: bool) -> None:
        row: list[Any] = [
            token.account_id,
            token.token_id,
            token.prefix,
            token.token_hash,
            token.created_at,
            int(revoked),
            self._next_version(),
        ]
        await self._store.insert("api_tokens", [row], column_names=_TOKEN_COLUMNS)


def _account_from_row(row: dict[str, Any]) -> Account:
    return Account(
        account_id=row["account_id"],
        name=row["name"],
        embed_key=row["embed_key"],
        origins=tuple(row["origins"]),
        streams=tuple(row["streams"]),
        stream_patterns=tuple(row["stream_patterns"]),
        k=int(row["k"]),
        retention_days=int(row["retention_days"]),
        privacy=str(row.get("privacy") or "k"),
        epsilon_per_day=float(row.get("epsilon_per_day") or 0.0),
        delta=float(row.get("delta") or 0.0),
        privacy_from=int(row.get("privacy_from") or 0),
        deleted=bool(row["deleted"]),
        next_k=int(row["next_k"]),
        next_k_from=_day(row["next_k_from"]) if int(row["next_k"]) else None,
    )


def _day(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def _is_tombstone(account: Account) -> bool:
    return account.deleted and account.embed_key.startswith(TOMBSTONE_EMBED_PREFIX)


def _utc(moment: datetime) -> datetime:
    """clickhouse-connect returns UTC columns as naive datetimes; a naive one is re-inserted
    as local time, so mark it UTC before writing it back."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
