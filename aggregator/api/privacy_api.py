"""GET /v1/privacy/budget: a dp account's privacy budget per UTC day (aggregator/release/budget.py).

Each day: epsilon_per_day, the epsilon and delta spent (the largest spend of any one viewer
key that day, from OpenDP's privacy maps of the parts released), and how many parts were
released and held back. A k-mode account gets ``{"mode": "k", "days": []}``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import orjson
from aiohttp import web

from aggregator.api.admin import privacy_json
from aggregator.api.auth import require_account
from aggregator.service import SERVICE

routes = web.RouteTableDef()


@routes.get("/v1/privacy/budget")
async def get_budget(request: web.Request) -> web.Response:
    account = await require_account(request)
    rows = await request.app[SERVICE].store.query_dicts(
        "SELECT day, epsilon_per_day, epsilon_spent, delta_spent, parts_released, parts_held "
        "FROM privacy_budget FINAL WHERE account_id = {id:String} ORDER BY day",
        {"id": account.account_id},
    )
    days: list[dict[str, Any]] = [
        {
            "day": _day(row["day"]),
            "epsilon_per_day": float(row["epsilon_per_day"]),
            "epsilon_spent": float(row["epsilon_spent"]),
            "delta_spent": float(row["delta_spent"]),
            "parts_released": int(row["parts_released"]),
            "parts_held": int(row["parts_held"]),
            "spent": float(row["epsilon_spent"]) >= float(row["epsilon_per_day"]) * (1 - 1e-9),
        }
        for row in rows
    ]
    body = {"account_id": account.account_id, "privacy": privacy_json(account), "days": days}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _day(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
