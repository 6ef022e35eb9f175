"""The customer's read API: ``/v1/stats``, ``/v1/streams`` and ``/v1/realtime``.

Every answer holds k-anonymous aggregates of the caller's account only. Rows of every
process run (``part``) of the same cell are combined (``cells.PARTS_ADDED_UP``: counts add
up, a concurrent peak is the largest); each part was k-anonymous on its own, so their
combination is too, and so is any remainder by subtraction (design.md, invariant 3).

Nothing below k is stored, so what was hidden cannot be counted cell by cell. What can be
said honestly: for each window, stream and breakdown, the stream's viewers that no published
value of the breakdown shows (the stream total minus the published values). Complementary
suppression makes that remainder 0 or >= k, so publishing it reveals nothing new.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from aiohttp import web

from aggregator.api import audit
from aggregator.api.auth import require_account
from aggregator.api.dp_rows import add_noise, flatten, noise_columns
from aggregator.api.params import EARLIEST, iso, parse_time
from aggregator.config import BREAKDOWN_DIMENSIONS
from aggregator.counting.cells import OTHER, added_up
from aggregator.counting.histogram import startup_quantile
from aggregator.service import SERVICE
from aggregator.storage.accounts_store import utc_today
from collector.errors import BadRequest

routes = web.RouteTableDef()

GRANULARITIES: Final = ("minute", "hour", "day")
GRANULARITY_CHOICES: Final = (*GRANULARITIES, "auto")
STEP: Final = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
# Most windows one request may span, per granularity (7 days of minutes, ~400 days of hours).
MAX_WINDOWS: Final = {"minute": 60 * 24 * 7, "hour": 24 * 400, "day": 366 * 30}
# `auto`: the finest granularity whose limit the range stays within, else day.
AUTO: Final = ((timedelta(hours=3), "minute"), (timedelta(days=7), "hour"))
FORMATS: Final = ("json", "csv")
DEFAULT_RANGE: Final = timedelta(days=1)
STREAMS_RANGE: Final = timedelta(days=30)
REALTIME_DEFAULT: Final = 30
REALTIME_MAX: Final = 180
# ClickHouse's DateTime covers 1970..2106; keep parameters well inside it.
MAX_STREAM_LENGTH: Final = 1024

# Metric names, in the order rows and CSV columns carry them.
METRICS: Final[tuple[str, ...]] = (
    "views",
    "unique_viewers",
    "playing_seconds",
    "startup_ms_p50",
    "startup_ms_p95",
    "rebuffer_count",
    "rebuffer_seconds",
    "rebuffer_ratio",
    "failures",
    "failures_by_code",
    "exits_before_start",
    "concurrent_peak",
    "bitrate_kbps_avg",
    "bitrate_changes",
    "latency_ms_avg",
)

# One sentence a customer understands, shown by the dashboard too
# (aggregator/api/static/index.html).
RELEASE_SENTENCE: Final = (
    "An hour shows its published minutes plus the viewers of minutes too small to show on "
    "their own, once at least k of them are pooled, and a day does the same with its "
    "hours, so a longer window can count more than its shorter windows added up, never less."
)
HIDDEN_NOTE: Final = (
    RELEASE_SENTENCE + " "
    "Each number in a cell needs k viewers behind it: a sum (views, playing time, "
    "rebuffering, failures, exits, bitrate changes, concurrency) that fewer than k viewers "
    "contributed to reads 0 until it is pooled with others in a longer window, averages "
    "weigh every viewer the same, and unique_viewers is rounded down to a multiple of k. "
    "Cells with fewer than k distinct viewers are never stored. Within a breakdown such "
    "values are merged into the value '(other)' when that reaches k, else left out; "
    "viewers_not_in_breakdown counts, per window and stream, the viewers of the stream total "
    "that no published value of the breakdown shows (0 or at least k by construction), added "
    "up over windows and streams. Streams with fewer than k viewers are merged into the "
    "stream '(other)' or left out; how many is not known, since nothing under k is kept."
)
RESTART_NOTE: Final = (
    "unique_viewers counts distinct viewers with a secret of the UTC day that lives only in "
    "the server's memory: a hot restart keeps it, but after a cold restart (a stop or a "
    "crash) a viewer seen before and after it counts twice for that day (the secret is gone, "
    "on purpose). Views, startup times, exits before start and playing time are not "
    "affected; concurrent_peak is the larger of the two runs' peaks."
)
STREAMS_NOTE: Final = (
    "unique_viewers is the sum of daily unique viewers: an upper bound, as a viewer who "
    "watched on several days counts once per day, and one seen before and after a cold "
    "restart of the server twice that day"
)
REALTIME_NOTE: Final = (
    "From stored minute cells, which exist only for minutes with at least k distinct "
    "viewers and are written a few seconds after the minute ends; null means no published "
    "cell (no viewers, fewer than k, or not yet written). concurrent_viewers adds up the "
    "streams' peaks within the minute, an upper bound of the account's peak."
)

SELECT_STATS = (
    """
SELECT
    window_start, stream, breakdown, value,
    """
    + added_up(
        "views",
        "unique_viewers",
        "playing_seconds",
        "startup_hist",
        "rebuffer_count",
        "rebuffer_seconds",
        "failures",
        "failures_by_code",
        "exits_before_start",
        "concurrent_peak",
        "bitrate_kbps_seconds",
        "bitrate_seconds",
        "bitrate_changes",
        "latency_ms_sum",
        "latency_count",
    )
    + """
FROM cells FINAL
WHERE account_id = {account:String}
  AND granularity = {granularity:String}
  AND has({breakdowns:Array(String)}, breakdown)
  AND window_start >= {start:DateTime('UTC')}
  AND window_start < {end:DateTime('UTC')}
  {stream_filter}
GROUP BY window_start, stream, breakdown, value
ORDER BY window_start, stream, breakdown, value
"""
)

SELECT_STREAMS = """
SELECT
    stream,
    sum(views) AS views,
    sum(unique_viewers) AS unique_viewers,
    sum(playing_seconds) AS playing_seconds,
    sum(failures) AS failures,
    min(window_start) AS first_window_start,
    max(window_start) AS last_window_start,
    uniqExact(window_start) AS days
FROM cells FINAL
WHERE account_id = {account:String}
  AND granularity = 'day'
  AND breakdown = ''
  AND window_start >= {start:DateTime('UTC')}
  AND window_start < {end:DateTime('UTC')}
GROUP BY stream
ORDER BY views DESC, stream
"""

SELECT_REALTIME = (
    """
SELECT
    window_start,
    sum(concurrent_peak) AS concurrent_viewers,
    sum(failures) AS failures,
    sum(views) AS views
FROM (
    SELECT window_start, stream, """
    + added_up("concurrent_peak", "failures", "views")
    + """
    FROM cells FINAL
    WHERE account_id = {account:String}
      AND granularity = 'minute'
      AND breakdown = ''
      AND window_start >= {start:DateTime('UTC')}
      AND window_start < {end:DateTime('UTC')}
      {stream_filter}
    GROUP BY window_start, stream
)
GROUP BY window_start
ORDER BY window_start
"""
)


# ---- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """The parsed parameters of ``GET /v1/stats``."""

    start: datetime  # as asked (UTC)
    end: datetime
    granularity: str  # minute | hour | day (auto resolved)
    requested: str  # as asked: minute | hour | day | auto
    stream: str | None
    by: tuple[str, ...]
    metrics: tuple[str, ...]
    fmt: str

    @property
    def first_window(self) -> datetime:
        """Start of the window holding ``start``: windows overlapping [start, end) are served."""
        return floor_time(self.start, self.granularity)

    def summary(self) -> dict[str, Any]:
        """The parameters for the audit log."""
        return {
            "from": iso(self.start),
            "to": iso(self.end),
            "granularity": self.granularity,
            "stream": self.stream,
            "by": list(self.by),
            "metrics": list(self.metrics),
            "format": self.fmt,
        }


def floor_time(value: datetime, granularity: str) -> datetime:
    """The start of the UTC ``granularity`` window holding ``value``."""
    value = value.astimezone(UTC).replace(second=0, microsecond=0)
    if granularity in ("hour", "day"):
        value = value.replace(minute=0)
    if granularity == "day":
        value = value.replace(hour=0)
    return value


def parse_range(
    query: Mapping[str, str], now: datetime, default: timedelta
) -> tuple[datetime, datetime]:
    """``from`` and ``to``: ``to`` defaults to now, ``from`` to ``default`` before ``to``."""
    end = parse_time("to", query.get("to"), now)
    start = parse_time("from", query.get("from"), max(end - default, EARLIEST))
    if start >= end:
        raise BadRequest("parameter 'from' must be before 'to'", key="from")
    return start, end


def parse_list(name: str, raw: str | None, choices: Sequence[str]) -> tuple[str, ...]:
    """A comma-separated subset of ``choices``, in the order given, without repeats."""
    if raw is None:
        return ()
    items = list(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))
    unknown = [item for item in items if item not in choices]
    if unknown:
        raise BadRequest(
            f"parameter {name!r} has unknown value(s) {', '.join(unknown)[:200]}; "
            f"choose from {', '.join(choices)}",
            key=name,
        )
    return tuple(items)


def parse_by(raw: str | None) -> tuple[str, ...]:
    return parse_list("by", raw, BREAKDOWN_DIMENSIONS)


def parse_choice(name: str, raw: str | None, choices: Sequence[str], default: str) -> str:
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise BadRequest(f"parameter {name!r} must be one of {', '.join(choices)}", key=name)
    return raw


def parse_stream(raw: str | None) -> str | None:
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_STREAM_LENGTH:
        raise BadRequest(f"parameter 'stream' is longer than {MAX_STREAM_LENGTH}", key="stream")
    return raw


def pick_granularity(requested: str, span: timedelta) -> str:
    """``auto``: minute up to 3 hours, hour up to 7 days, day beyond."""
    if requested != "auto":
        return requested
    for limit, granularity in AUTO:
        if span <= limit:
            return granularity
    return "day"


def parse_stats_query(query: Mapping[str, str], now: datetime) -> StatsQuery:
    """Check every parameter of ``GET /v1/stats``; a wrong one is a 400 that names it."""
    requested = parse_choice("granularity", query.get("granularity"), GRANULARITY_CHOICES, "auto")
    start, end = parse_range(query, now, DEFAULT_RANGE)
    granularity = pick_granularity(requested, end - start)
    windows = (end - floor_time(start, granularity)) / STEP[granularity]
    if windows > MAX_WINDOWS[granularity]:
        raise BadRequest(
            f"range too long for granularity {granularity!r} (at most "
            f"{MAX_WINDOWS[granularity]} windows); use a coarser one or a shorter range",
            key="granularity" if requested != "auto" else "from",
        )
    metrics = parse_list("metrics", query.get("metrics"), METRICS) or METRICS
    return StatsQuery(
        start=start,
        end=end,
        granularity=granularity,
        requested=requested,
        stream=parse_stream(query.get("stream")),
        by=parse_by(query.get("by")),
        metrics=metrics,
        fmt=parse_choice("format", query.get("format"), FORMATS, "json"),
    )


def parse_minutes(raw: str | None) -> int:
    if raw is None or raw == "":
        return REALTIME_DEFAULT
    try:
        minutes = int(raw)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= REALTIME_MAX:
        raise BadRequest(
            f"parameter 'minutes' must be a whole number from 1 to {REALTIME_MAX}", key="minutes"
        )
    return minutes


# ---- shaping ---------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float, digits: int) -> float | None:
    return round(numerator / denominator, digits) if denominator > 0 else None


def _quantile(hist: list[int], q: float) -> float | None:
    value = startup_quantile(hist, q)
    return None if value != value else round(value, 1)  # NaN: no startups


def metric_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """Every metric of one summed cell, in ``METRICS`` order."""
    hist = [int(n) for n in row["startup_hist"]]
    playing = float(row["playing_seconds"])
    rebuffer = float(row["rebuffer_seconds"])
    codes = {str(code): int(n) for code, n in dict(row["failures_by_code"]).items() if n}
    return {
        "views": int(row["views"]),
        "unique_viewers": int(row["unique_viewers"]),
        "playing_seconds": round(playing, 3),
        "startup_ms_p50": _quantile(hist, 0.5),
        "startup_ms_p95": _quantile(hist, 0.95),
        "rebuffer_count": int(row["rebuffer_count"]),
        "rebuffer_seconds": round(rebuffer, 3),
        "rebuffer_ratio": _ratio(rebuffer, playing + rebuffer, 6),
        "failures": int(row["failures"]),
        "failures_by_code": dict(sorted(codes.items(), key=lambda kv: (-kv[1], kv[0]))),
        "exits_before_start": int(row["exits_before_start"]),
        "concurrent_peak": int(row["concurrent_peak"]),
        "bitrate_kbps_avg": _ratio(
            float(row["bitrate_kbps_seconds"]), float(row["bitrate_seconds"]), 1
        ),
        "bitrate_changes": int(row["bitrate_changes"]),
        "latency_ms_avg": _ratio(float(row["latency_ms_sum"]), float(row["latency_count"]), 1),
    }


def shape(row: Mapping[str, Any], breakdown: str, metrics: Sequence[str]) -> dict[str, Any]:
    """One output row: window_start, stream, the dimension (if any), the chosen metrics."""
    out: dict[str, Any] = {"window_start": iso(row["window_start"]), "stream": row["stream"]}
    if breakdown:
        out[breakdown] = row["value"]
    values = metric_values(row)
    out.update((name, values[name]) for name in metrics)
    return out


@dataclass(slots=True)
class _DimensionHidden:
    viewers: int = 0
    groups: int = 0
    suppressed: int = 0


def hidden_summary(rows: Sequence[Mapping[str, Any]], by: Sequence[str]) -> dict[str, Any]:
    """What the breakdowns leave out, from the stream totals and the published values.

    ``rows``: summed cells with ``window_start``, ``stream``, ``breakdown``, ``value``,
    ``unique_viewers``; totals have breakdown ``""``.
    """
    totals: dict[tuple[Any, str], int] = {}
    published: dict[tuple[Any, str, str], int] = {}
    generalised = 0
    for row in rows:
        uv = int(row["unique_viewers"])
        if row["breakdown"] == "":
            totals[(row["window_start"], row["stream"])] = uv
            continue
        key = (row["window_start"], row["stream"], row["breakdown"])
        published[key] = published.get(key, 0) + uv
        if row["value"] == OTHER:
            generalised += 1
    per_dim = {dim: _DimensionHidden() for dim in by}
    for (window, stream), total in totals.items():
        for dim, acc in per_dim.items():
            shown = published.get((window, stream, dim))
            # A viewer seen with two values (two players, say) counts in both: clamp at 0.
            remainder = max(0, total - (shown or 0))
            acc.viewers += remainder
            if remainder:
                acc.groups += 1
            if shown is None and total:
                acc.suppressed += 1
    return {
        "note": HIDDEN_NOTE,
        "viewers_not_in_breakdown": sum(acc.viewers for acc in per_dim.values()),
        "other_rows": generalised,
        "by": {
            dim: {
                "viewers_not_in_breakdown": acc.viewers,
                "windows_with_hidden_viewers": acc.groups,
                "windows_without_breakdown": acc.suppressed,
            }
            for dim, acc in per_dim.items()
        },
    }


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return value


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """A header row, then one line per row; missing cells empty, maps as JSON."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row.get(column)) for column in columns])
    return buffer.getvalue().encode()


def json_response(body: Mapping[str, Any]) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), content_type="application/json"
    )


# ---- routes ----------------------------------------------------------------------------------


def _now(request: web.Request) -> datetime:
    return datetime.fromtimestamp(request.app[SERVICE].clock(), UTC)


@routes.get("/v1/stats")
async def get_stats(request: web.Request) -> web.Response:
    account = await require_account(request)
    query = parse_stats_query(request.query, _now(request))
    params: dict[str, Any] = {
        "account": account.account_id,
        "granularity": query.granularity,
        "breakdowns": ["", *query.by],
        "start": query.first_window.replace(tzinfo=None),
        "end": query.end.replace(tzinfo=None),
    }
    stream_filter = ""
    if query.stream is not None:
        stream_filter = "AND stream = {stream:String}"
        params["stream"] = query.stream
    store = request.app[SERVICE].store
    result = await store.query_dicts(SELECT_STATS.replace("{stream_filter}", stream_filter), params)
    await audit.record(request, account.account_id, "stats.read", query.summary())

    if query.by:
        order = {dim: i for i, dim in enumerate(query.by)}
        cells = sorted(
            (r for r in result if r["breakdown"]),
            key=lambda r: (order[r["breakdown"]], r["window_start"], r["stream"], r["value"]),
        )
        rows = [shape(r, r["breakdown"], query.metrics) for r in cells]
    else:
        rows = [shape(r, "", query.metrics) for r in result if r["breakdown"] == ""]
    hidden = hidden_summary(result, query.by)
    await add_noise(
        store, account, query.granularity, rows, query.by, query.first_window, query.end
    )

    if query.fmt == "csv":
        columns = ["window_start", "stream", *query.by, *query.metrics]
        if account.privacy == "dp":  # the noise of the chosen noisy metrics, flat
            columns += noise_columns(query.metrics)
            rows = [{**row, **flatten(row)} for row in rows]
        return web.Response(
            body=to_csv(rows, columns),
            content_type="text/csv",
            charset="utf-8",
            headers={
                "StreamTally-K": str(account.k_on(utc_today())),
                "StreamTally-Granularity": query.granularity,
                "StreamTally-Viewers-Not-In-Breakdown": str(hidden["viewers_not_in_breakdown"]),
            },
        )
    return json_response(
        {
            "account_id": account.account_id,
            "from": iso(query.start),
            "to": iso(query.end),
            "granularity": query.granularity,
            "granularity_requested": query.requested,
            "stream": query.stream,
            "by": list(query.by),
            "metrics": list(query.metrics),
            "k": account.k_on(utc_today()),
            "rows": rows,
            "hidden": hidden,
            "note": RESTART_NOTE,
        }
    )


@routes.get("/v1/streams")
async def get_streams(request: web.Request) -> web.Response:
    account = await require_account(request)
    start, end = parse_range(request.query, _now(request), STREAMS_RANGE)
    first_day = floor_time(start, "day")
    if (end - first_day) / STEP["day"] > MAX_WINDOWS["day"]:
        raise BadRequest(f"range too long (at most {MAX_WINDOWS['day']} days)", key="from")
    params = {
        "account": account.account_id,
        "start": first_day.replace(tzinfo=None),
        "end": end.replace(tzinfo=None),
    }
    result = await request.app[SERVICE].store.query_dicts(SELECT_STREAMS, params)
    await audit.record(
        request, account.account_id, "streams.read", {"from": iso(start), "to": iso(end)}
    )
    streams = [
        {
            "stream": r["stream"],
            "views": int(r["views"]),
            "unique_viewers": int(r["unique_viewers"]),
            "playing_seconds": round(float(r["playing_seconds"]), 3),
            "failures": int(r["failures"]),
            "days": int(r["days"]),
            "first_window_start": iso(r["first_window_start"]),
            "last_window_start": iso(r["last_window_start"]),
        }
        for r in result
    ]
    return json_response(
        {
            "account_id": account.account_id,
            "from": iso(start),
            "to": iso(end),
            "granularity": "day",
            "k": account.k_on(utc_today()),
            "note": STREAMS_NOTE,
            "streams": streams,
        }
    )


@routes.get("/v1/realtime")
async def get_realtime(request: web.Request) -> web.Response:
    account = await require_account(request)
    minutes = parse_minutes(request.query.get("minutes"))
    stream = parse_stream(request.query.get("stream"))
    now = floor_time(_now(request), "minute")
    start = now - timedelta(minutes=minutes - 1)  # the last `minutes` minutes, this one included
    end = now + STEP["minute"]
    params: dict[str, Any] = {
        "account": account.account_id,
        "start": start.replace(tzinfo=None),
        "end": end.replace(tzinfo=None),
    }
    stream_filter = ""
    if stream is not None:
        stream_filter = "AND stream = {stream:String}"
        params["stream"] = stream
    result = await request.app[SERVICE].store.query_dicts(
        SELECT_REALTIME.replace("{stream_filter}", stream_filter), params
    )
    await audit.record(
        request, account.account_id, "realtime.read", {"minutes": minutes, "stream": stream}
    )
    by_minute = {iso(r["window_start"]): r for r in result}
    series = []
    for i in range(minutes):
        window = iso(start + timedelta(minutes=i))
        row = by_minute.get(window)
        series.append(
            {
                "window_start": window,
                "concurrent_viewers": int(row["concurrent_viewers"]) if row else None,
                "failures": int(row["failures"]) if row else None,
                "views": int(row["views"]) if row else None,
            }
        )
    return json_response(
        {
            "account_id": account.account_id,
            "from": iso(start),
            "to": iso(end),
            "minutes": minutes,
            "stream": stream,
            "k": account.k_on(utc_today()),
            "note": REALTIME_NOTE,
            "latest_window_start": iso(result[-1]["window_start"]) if result else None,
            "series": series,
        }
    )
