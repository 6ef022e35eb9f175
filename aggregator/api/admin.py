"""The operator's admin API: accounts and on-demand flushes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from aggregator.api import audit
from aggregator.api.auth import ACCOUNT_STORE, require_admin
from aggregator.service import SERVICE
from collector.accounts import Account
from collector.errors import BadRequest

routes = web.RouteTableDef()
DEFAULT_K = web.AppKey("default_k", int)
DEFAULT_RETENTION = web.AppKey("default_retention", int)


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be a JSON object", key="body") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", key="body")
    return data


def _field(data: dict[str, Any], name: str, kind: type, default: Any = ...) -> Any:
    if name not in data:
        if default is ...:
            raise BadRequest(f"missing field {name!r}", key=name)
        return default
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"field {name!r} must be of type {kind.__name__}", key=name)
    return value


def privacy_json(account: Account) -> dict[str, Any]:
    """The account's privacy mode as the API shows it."""
    if account.privacy != "dp":
        return {"mode": "k"}
    return {
        "mode": "dp",
        "epsilon_per_day": account.epsilon_per_day,
        "delta": account.delta,
        "from": datetime.fromtimestamp(account.privacy_from, UTC).date().isoformat(),
    }


@routes.post("/v1/admin/accounts")
async def create_account(request: web.Request) -> web.Response:
    require_admin(request)
    data = await json_body(request)
    name = _field(data, "name", str)
    origins = _field(data, "origins", list, [])
    if not all(isinstance(o, str) for o in origins):
        raise BadRequest("field 'origins' must be a list of strings", key="origins")
    k = _field(data, "k", int, request.app[DEFAULT_K])
    retention = _field(data, "retention_days", int, request.app[DEFAULT_RETENTION])
    streams = _field(data, "streams", list, [])
    patterns = _field(data, "stream_patterns", list, [])
    privacy = _field(data, "privacy", dict, None)
    account, token = await request.app[ACCOUNT_STORE].create(
        name, origins, k, retention, streams, patterns, privacy
    )
    await audit.record(
        request,
        account.account_id,
        "account.create",
        {
            "k": account.k,
            "retention_days": account.retention_days,
            "origins": len(origins),
            "streams": len(account.streams),
            "stream_patterns": len(account.stream_patterns),
            "privacy": account.privacy,
        },
    )
    body = {
        "account_id": account.account_id,
        "name": account.name,
        "embed_key": account.embed_key,
        "api_token": token,
        "origins": list(account.origins),
        "streams": list(account.streams),
        "stream_patterns": list(account.stream_patterns),
        "k": account.k,
        "retention_days": account.retention_days,
        "privacy": privacy_json(account),
    }
    return web.json_response(body, status=201, dumps=lambda o: orjson.dumps(o).decode())


@routes.post("/v1/admin/flush")
async def flush(request: web.Request) -> web.Response:
    """Write the current state of every open cell now."""
    require_admin(request)
    report = await request.app[SERVICE].flush(everything=True)
    return web.json_response(report.as_json())
