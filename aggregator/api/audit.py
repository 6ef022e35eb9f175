"""The audit log: every customer read, export, purge, token and account change.

One row per action in the ``audit`` table (migration 0004): time, account, actor, action and
a summary of the request's parameters as JSON. The actor is the caller's token prefix
(``st_AbCde``, see :func:`aggregator.storage.accounts_store.token_prefix`) or ``admin``;
a full token,
a token hash or any viewer data never goes in. Each row carries its retention in days
(setting ``audit_retention_days``, default :data:`AUDIT_RETENTION_DAYS`); ClickHouse drops it
by TTL after that.

Failure policy. Actions that change or take data away (:data:`ACCOUNTABLE`: export, token and
account changes, purge) must be on record: if the audit row cannot be written the action fails
(``StorageError``, answered 500). A plain read (``stats.read`` and other reads) is answered
even when its audit row could not be written; the failure is logged (without the summary) and
counted in ``streamtally_audit_failures_total``.

Rows of a deleted account are purged with the account; only its purge receipt (table
``purges``) stays.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import Counter

from aggregator.api.auth import ACCOUNT_STORE, ADMIN_TOKEN, bearer, require_account
from aggregator.api.params import EARLIEST, iso, parse_time
from aggregator.service import SERVICE
from aggregator.storage.accounts_store import TOKEN_LENGTH, TOKEN_PREFIX, token_prefix
from aggregator.storage.store import Store
from collector.errors import BadRequest, StorageError

log = logging.getLogger("streamtally.audit")

AUDIT_RETENTION_DAYS = 400  # until aggregator/config.py has audit_retention_days
MAX_SUMMARY_CHARS = 4000
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000

ACTIONS = frozenset(
    {
        "stats.read",
        "streams.read",
        "realtime.read",
        "audit.read",
        "export",
        "account.create",
        "account.update",
        "account.delete",
        "token.create",
        "token.rotate",
        "token.revoke",
        "purge",
    }
)
# Actions that fail when their audit row cannot be written.
ACCOUNTABLE = frozenset(
    {
        "export",
        "account.create",
        "account.update",
        "account.delete",
        "token.create",
        "token.rotate",
        "token.revoke",
        "purge",
    }
)

AUDIT_FAILURES = Counter(
    "streamtally_audit_failures_total",
    "Audit rows that could not be written (reads are answered anyway; changes fail)",
)

COLUMNS = ("time", "account_id", "actor", "action", "summary", "retention_days")

# Anything shaped like an API token or an admin token is cut down to its shown prefix.
_SECRET = re.compile(r"(?:st|sta)_[A-Za-z0-9_-]{20,}")


def actor_of(request: web.Request) -> str:
    """``admin`` for the admin token, the shown prefix of an API token, else ``anonymous``."""
    token = bearer(request)
    if token is None:
        return "anonymous"
    if token.startswith(TOKEN_PREFIX) and len(token) == TOKEN_LENGTH:
        return token_prefix(token)
    if request.app[ADMIN_TOKEN].verify(token):
        return "admin"
    return "anonymous"


def summarise(summary: dict[str, Any]) -> str:
    """The summary as compact JSON, token-shaped strings cut to their prefix, size-capped."""
    text = orjson.dumps(summary, default=str, option=orjson.OPT_SORT_KEYS).decode()
    text = _SECRET.sub(lambda m: token_prefix(m.group(0)) + "...", text)
    if len(text) > MAX_SUMMARY_CHARS:
        text = orjson.dumps({"truncated": True, "keys": sorted(summary)[:50]}).decode()
    return text


def retention_days(request: web.Request) -> int:
    config = request.app[SERVICE].config
    return int(getattr(config, "audit_retention_days", AUDIT_RETENTION_DAYS))


async def write(
    store: Store,
    *,
    account_id: str,
    actor: str,
    action: str,
    summary: dict[str, Any],
    retention: int = AUDIT_RETENTION_DAYS,
    at: datetime | None = None,
) -> None:
    """Insert one audit row (raises StorageError)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    row: list[Any] = [
        at or datetime.now(UTC),
        account_id,
        actor,
        action,
        summarise(summary),
        max(1, min(retention, 65535)),
    ]
    await store.insert("audit", [row], column_names=COLUMNS)


async def record(
    request: web.Request, account_id: str, action: str, summary: dict[str, Any]
) -> None:
    """Write one audit entry: time, account, actor (token prefix or "admin"), action, summary.

    ``summary`` holds the request's parameters (never viewer data). Awaited: when this
    returns, the row is in ClickHouse. For :data:`ACCOUNTABLE` actions a failure raises
    StorageError (the action must fail); for reads it is logged and counted.
    """
    account = request.app[ACCOUNT_STORE].by_id(account_id)
    if account is not None and account.deleted:
        return  # its audit rows are being purged; the purge receipt is its record
    try:
        await write(
            request.app[SERVICE].store,
            account_id=account_id,
            actor=actor_of(request),
            action=action,
            summary=summary,
            retention=retention_days(request),
        )
    except StorageError as exc:
        AUDIT_FAILURES.inc()
        if action in ACCOUNTABLE:
            raise
        log.warning("audit row for %s not written: %s", action, exc)


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"parameter 'limit' must be an integer from 1 to {MAX_LIMIT}", key="limit")
    return int(raw)


def _time(name: str, raw: str | None) -> datetime | None:
    return None if raw is None or raw == "" else parse_time(name, raw, EARLIEST)


async def entries(
    store: Store,
    account_id: str,
    *,
    limit: int = DEFAULT_LIMIT,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[dict[str, Any]]:
    """The account's audit rows, newest first, ``start <= time < end``."""
    conditions = ["account_id = {account:String}"]
    params: dict[str, Any] = {"account": account_id, "limit": limit}
    if start is not None:
        conditions.append("time >= {start:DateTime64(3, 'UTC')}")
        params["start"] = start.astimezone(UTC).replace(tzinfo=None)
    if end is not None:
        conditions.append("time < {end:DateTime64(3, 'UTC')}")
        params["end"] = end.astimezone(UTC).replace(tzinfo=None)
    rows = await store.query_dicts(
        "SELECT time, actor, action, summary FROM audit WHERE "
        + " AND ".join(conditions)
        + " ORDER BY time DESC LIMIT {limit:UInt32}",
        params,
    )
    return [
        {
            "time": iso(row["time"], "milliseconds"),
            "actor": row["actor"],
            "action": row["action"],
            "summary": orjson.loads(row["summary"]) if row["summary"] else {},
        }
        for row in rows
    ]


async def get_audit(request: web.Request) -> web.Response:
    """GET /v1/audit (routed in account_api): the caller's account's log, newest first
    (``limit``, ``from``, ``to``)."""
    account = await require_account(request)
    q = request.query
    limit = _limit(q.get("limit"))
    start = _time("from", q.get("from"))
    end = _time("to", q.get("to"))
    if start is not None and end is not None and start >= end:
        raise BadRequest("parameter 'from' must be before 'to'", key="from")
    rows = await entries(
        request.app[SERVICE].store, account.account_id, limit=limit, start=start, end=end
    )
    await record(
        request,
        account.account_id,
        "audit.read",
        {k: q[k] for k in ("limit", "from", "to") if k in q},
    )
    body = {
        "account_id": account.account_id,
        "retention_days": retention_days(request),
        "entries": rows,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")
