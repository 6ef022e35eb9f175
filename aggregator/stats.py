"""The customer's stats API (minimal): k-anonymous aggregates of the caller's account only.

Rows of every process run (``part``) of the same cell are added up; each part was
k-anonymous on its own, so their sum is too, and so is any remainder by subtraction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from aggregator.auth import require_account
from aggregator.config import BREAKDOWN_DIMENSIONS
from aggregator.histogram import startup_quantile
from aggregator.service import SERVICE
from collector.errors import BadRequest

routes = web.RouteTableDef()

GRANULARITIES = ("minute", "hour", "day")
MAX_WINDOWS = {"minute": 60 * 24 * 7, "hour": 24 * 400, "day": 366 * 30}
STEP = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}

SELECT = """
SELECT
    window_start, stream, value,
    sum(views) AS views,
    sum(unique_viewers) AS unique_viewers,
    sum(playing_seconds) AS playing_seconds,
    sumForEach(startup_hist) AS startup_hist,
    sum(rebuffer_count) AS rebuffer_count,
    sum(rebuffer_seconds) AS rebuffer_seconds,
    sum(failures) AS failures,
    sum(exits_before_start) AS exits_before_start,
    sum(concurrent_peak) AS concurrent_peak,
    sum(bitrate_kbps_seconds) AS bitrate_kbps_seconds,
    sum(bitrate_seconds) AS bitrate_seconds
FROM cells FINAL
WHERE account_id = {account:String}
  AND granularity = {granularity:String}
  AND breakdown = {breakdown:String}
  AND window_start >= {start:DateTime('UTC')}
  AND window_start < {end:DateTime('UTC')}
  {stream_filter}
GROUP BY window_start, stream, value
ORDER BY window_start, stream, value
"""


def parse_time(name: str, raw: str | None, default: datetime) -> datetime:
    if raw is None or raw == "":
        return default
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"parameter {name!r} must be an ISO 8601 time, e.g. 2026-11-24T10:00:00Z", key=name
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_by(raw: str | None) -> list[str]:
    if not raw:
        return [""]
    dims = [d.strip() for d in raw.split(",") if d.strip()]
    unknown = [d for d in dims if d not in BREAKDOWN_DIMENSIONS]
    if unknown:
        raise BadRequest(
            f"parameter 'by' has unknown dimension(s) {', '.join(unknown)}; "
            f"choose from {', '.join(BREAKDOWN_DIMENSIONS)}",
            key="by",
        )
    return dims


def shape(row: dict[str, Any], breakdown: str) -> dict[str, Any]:
    hist = list(row["startup_hist"])
    bitrate_seconds = float(row["bitrate_seconds"])
    out: dict[str, Any] = {
        "window_start": row["window_start"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "stream": row["stream"],
    }
    if breakdown:
        out[breakdown] = row["value"]
    out.update(
        {
            "views": int(row["views"]),
            "unique_viewers": int(row["unique_viewers"]),
            "playing_seconds": round(float(row["playing_seconds"]), 3),
            "startup_ms_p50": startup_quantile(hist, 0.5),
            "startup_ms_p95": startup_quantile(hist, 0.95),
            "rebuffer_count": int(row["rebuffer_count"]),
            "rebuffer_seconds": round(float(row["rebuffer_seconds"]), 3),
            "failures": int(row["failures"]),
            "exits_before_start": int(row["exits_before_start"]),
            "concurrent_peak": int(row["concurrent_peak"]),
            "bitrate_kbps_avg": (
                round(float(row["bitrate_kbps_seconds"]) / bitrate_seconds, 1)
                if bitrate_seconds > 0
                else None
            ),
        }
    )
    return out


@routes.get("/v1/stats")
async def get_stats(request: web.Request) -> web.Response:
    account = await require_account(request)
    q = request.query
    granularity = q.get("granularity", "hour")
    if granularity not in GRANULARITIES:
        raise BadRequest(
            f"parameter 'granularity' must be one of {', '.join(GRANULARITIES)}",
            key="granularity",
        )
    now = datetime.now(UTC)
    end = parse_time("to", q.get("to"), now)
    start = parse_time("from", q.get("from"), end - timedelta(days=1))
    if start >= end:
        raise BadRequest("parameter 'from' must be before 'to'", key="from")
    if (end - start) / STEP[granularity] > MAX_WINDOWS[granularity]:
        raise BadRequest(
            f"range too long for granularity {granularity!r}; use a coarser one",
            key="granularity",
        )
    stream = q.get("stream")
    store = request.app[SERVICE].store
    rows: list[dict[str, Any]] = []
    for breakdown in parse_by(q.get("by")):
        params: dict[str, Any] = {
            "account": account.account_id,
            "granularity": granularity,
            "breakdown": breakdown,
            "start": start.replace(tzinfo=None),
            "end": end.replace(tzinfo=None),
        }
        stream_filter = ""
        if stream:
            stream_filter = "AND stream = {stream:String}"
            params["stream"] = stream
        result = await store.query_dicts(SELECT.replace("{stream_filter}", stream_filter), params)
        rows.extend(shape(r, breakdown) for r in result)
    body = {
        "account_id": account.account_id,
        "from": start.isoformat().replace("+00:00", "Z"),
        "to": end.isoformat().replace("+00:00", "Z"),
        "granularity": granularity,
        "k": account.k,
        "rows": rows,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")
