"""``GET /v1/openapi.json``: the OpenAPI 3.1 description of every route of the service.

Written by hand, next to the code it describes; ``tests/integration/test_openapi.py`` checks
that its (method, path) pairs are exactly the app's routes, that it is a valid OpenAPI 3.1
document, and runs schemathesis against a live server with it.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import orjson
from aiohttp import web

from aggregator.api.export import COLUMNS as EXPORT_COLUMNS
from aggregator.api.export import FORMAT_CHOICES as EXPORT_FORMATS
from aggregator.api.export import MANIFEST_HEADER
from aggregator.api.stats import (
    FORMATS,
    GRANULARITY_CHOICES,
    HIDDEN_NOTE,
    MAX_WINDOWS,
    METRICS,
    REALTIME_DEFAULT,
    REALTIME_MAX,
    REALTIME_NOTE,
    RESTART_NOTE,
    STREAMS_NOTE,
)
from aggregator.config import BREAKDOWN_DIMENSIONS

routes = web.RouteTableDef()

API_VERSION: Final = "1.0.0"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str] | None = None, /, **props: Schema) -> Schema:
    """An object with exactly these properties."""
    schema: Schema = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def open_obj(required: list[str] | None = None, /, **props: Schema) -> Schema:
    """An object with these properties and possibly more."""
    schema = obj(required, **props)
    del schema["additionalProperties"]
    return schema


def nullable(kind: str, **more: Any) -> Schema:
    return {"type": [kind, "null"], **more}


def arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


STRING: Final[Schema] = {"type": "string"}
INT: Final[Schema] = {"type": "integer", "minimum": 0}
NUMBER: Final[Schema] = {"type": "number", "minimum": 0}
TIME: Final[Schema] = {"type": "string", "format": "date-time"}
BOOL: Final[Schema] = {"type": "boolean"}
BINARY: Final[Schema] = {"type": "string", "contentMediaType": "application/octet-stream"}


def json_body(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": ref("Problem")}},
    }


BAD_REQUEST: Final = problem("a parameter or the body is wrong; `key` names which")
NO_TOKEN: Final = problem("the bearer token is missing or not valid")
ADMIN: Final[list[dict[str, list[str]]]] = [{"adminToken": []}]
API: Final[list[dict[str, list[str]]]] = [{"apiToken": []}]


def query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": STRING,
        "description": description,
    }


FROM: Final = query("from", TIME, "start of the range, ISO 8601 (UTC if no offset)")
TO: Final = query("to", TIME, "end of the range (exclusive), ISO 8601; default now")
STREAM: Final = query(
    "stream", {"type": "string", "maxLength": 1024}, "only this stream (content id)"
)
ACCOUNT_ID: Final = path_param("account_id", "the account, e.g. acc_0123456789abcdef")
TOKEN_ID: Final = path_param("token_id", "the token, e.g. tok_0123456789abcdef")
EMBED_KEY: Final = path_param("embed_key", "the account's public embed key")


PRIVACY: Final[Schema] = {
    **obj(
        ["mode"],
        mode={"enum": ["k", "dp"]},
        epsilon_per_day={"type": "number", "exclusiveMinimum": 0, "maximum": 20},
        delta={"type": "number", "exclusiveMinimum": 0, "maximum": 0.001},
        **{"from": {"type": "string", "format": "date"}},
    ),
    "description": "k: k-anonymity only; dp: noise on every released part (docs/privacy.md), "
    "from the next UTC day",
}


def _stats_row() -> Schema:
    metrics: dict[str, Schema] = {
        "views": INT,
        "unique_viewers": {
            **INT,
            "description": "distinct viewers in the window (k mode: rounded down to steps of k)",
        },
        "playing_seconds": NUMBER,
        "startup_ms_p50": nullable("number", description="median video startup time, ms"),
        "startup_ms_p95": nullable("number", description="95th percentile startup time, ms"),
        "rebuffer_count": INT,
        "rebuffer_seconds": NUMBER,
        "rebuffer_ratio": nullable(
            "number",
            minimum=0,
            maximum=1,
            description="rebuffer_seconds / (playing_seconds + rebuffer_seconds)",
        ),
        "failures": INT,
        "failures_by_code": {"type": "object", "additionalProperties": INT},
        "exits_before_start": INT,
        "concurrent_peak": {**INT, "description": "most viewers playing at once"},
        "bitrate_kbps_avg": nullable("number", description="time-weighted average bitrate"),
        "bitrate_changes": INT,
        "latency_ms_avg": nullable("number", description="average live latency, ms"),
    }
    assert tuple(metrics) == METRICS
    dims = {
        dim: {**STRING, "description": f"present in rows of by={dim}"}
        for dim in BREAKDOWN_DIMENSIONS
    }
    noise_of = obj(
        ["scale", "ci95"],
        scale={**NUMBER, "description": "scale of the noise added (discrete Laplace)"},
        ci95={**NUMBER, "description": "half-width of the 95 % interval around the value"},
    )
    noise = {
        **obj(
            None,
            views=noise_of,
            unique_viewers=noise_of,
            playing_seconds=noise_of,
            failures=noise_of,
        ),
        "description": "dp accounts only: the noise on each noisy metric of this row; the "
        "true value lies within value ± ci95 in 95 % of rows (docs/privacy.md)",
    }
    return obj(
        ["window_start", "stream"],
        window_start=TIME,
        stream=STRING,
        **dims,
        **metrics,
        noise=noise,
    )


def _schemas() -> dict[str, Schema]:
    hidden_dim = obj(
        ["viewers_not_in_breakdown", "windows_with_hidden_viewers", "windows_without_breakdown"],
        viewers_not_in_breakdown=INT,
        windows_with_hidden_viewers={
            **INT,
            "description": "(window, stream) pairs whose breakdown leaves viewers out",
        },
        windows_without_breakdown={
            **INT,
            "description": "(window, stream) pairs where no value of the breakdown reached k",
        },
    )
    return {
        "Problem": open_obj(
            ["type", "title", "status", "detail"],
            type=STRING,
            title=STRING,
            status={"type": "integer"},
            detail=STRING,
            key={**STRING, "description": "the parameter, field or header that is wrong"},
        ),
        "StatsRow": _stats_row(),
        "Hidden": {
            **obj(
                ["note", "viewers_not_in_breakdown", "other_rows", "by"],
                note=STRING,
                viewers_not_in_breakdown={
                    **INT,
                    "description": "sum over windows, streams and breakdowns of the viewers "
                    "no published value shows",
                },
                other_rows={**INT, "description": "rows whose value is '(other)'"},
                by={"type": "object", "additionalProperties": hidden_dim},
            ),
            "description": HIDDEN_NOTE,
        },
        "Stats": obj(
            ["account_id", "from", "to", "granularity", "k", "rows", "hidden"],
            account_id=STRING,
            **{"from": TIME, "to": TIME},
            granularity={"enum": ["minute", "hour", "day"]},
            granularity_requested={"enum": list(GRANULARITY_CHOICES)},
            stream=nullable("string"),
            by=arr({"enum": list(BREAKDOWN_DIMENSIONS)}),
            metrics=arr({"enum": list(METRICS)}),
            k={"type": "integer", "minimum": 2},
            rows=arr(ref("StatsRow")),
            hidden=ref("Hidden"),
            note={**STRING, "description": RESTART_NOTE},
        ),
        "Streams": obj(
            ["account_id", "from", "to", "k", "streams"],
            account_id=STRING,
            **{"from": TIME, "to": TIME},
            granularity={"const": "day"},
            k={"type": "integer", "minimum": 2},
            note={**STRING, "description": STREAMS_NOTE},
            streams=arr(
                obj(
                    [
                        "stream",
                        "views",
                        "unique_viewers",
                        "first_window_start",
                        "last_window_start",
                    ],
                    stream=STRING,
                    views=INT,
                    unique_viewers={**INT, "description": STREAMS_NOTE},
                    playing_seconds=NUMBER,
                    failures=INT,
                    days={**INT, "description": "days with a published cell"},
                    first_window_start=TIME,
                    last_window_start=TIME,
                )
            ),
        ),
        "Realtime": obj(
            ["account_id", "minutes", "series"],
            account_id=STRING,
            **{"from": TIME, "to": TIME},
            minutes={"type": "integer", "minimum": 1, "maximum": REALTIME_MAX},
            stream=nullable("string"),
            k={"type": "integer", "minimum": 2},
            note={**STRING, "description": REALTIME_NOTE},
            latest_window_start={"type": ["string", "null"], "format": "date-time"},
            series=arr(
                obj(
                    ["window_start", "concurrent_viewers", "failures"],
                    window_start=TIME,
                    concurrent_viewers=nullable("integer", minimum=0),
                    failures=nullable("integer", minimum=0),
                    views=nullable("integer", minimum=0),
                )
            ),
        ),
        "Manifest": obj(
            ["manifest"],
            manifest=open_obj(
                ["account_id", "exported_at", "format", "k", "retention_days", "schema"],
                manifest_version={"type": "integer"},
                account_id=STRING,
                exported_at=TIME,
                format={"enum": list(EXPORT_FORMATS)},
                k={"type": "integer", "minimum": 2},
                retention_days={"type": "integer", "minimum": 1},
                rows=INT,
                rows_note=STRING,
                contents=STRING,
                schema=arr(
                    obj(
                        ["name", "type"],
                        name={"enum": list(EXPORT_COLUMNS)},
                        type={**STRING, "description": "ClickHouse type"},
                        description=STRING,
                    )
                ),
            ),
        ),
        "AccountCreated": open_obj(
            ["account_id", "embed_key", "api_token", "k"],
            account_id=STRING,
            name=STRING,
            embed_key=STRING,
            api_token={**STRING, "description": "shown once; stored only as a hash"},
            origins=arr(STRING),
            streams={**arr(STRING), "description": "declared stream names, kept as sent"},
            stream_patterns={
                **arr(STRING),
                "description": "declared stream names as globs (* and ? match letters, "
                "digits, _ and -)",
            },
            k={"type": "integer", "minimum": 2},
            retention_days={"type": "integer", "minimum": 1},
            privacy=PRIVACY,
        ),
        "Account": open_obj(
            ["account_id", "deleted"],
            account_id=STRING,
            name=STRING,
            embed_key=nullable("string"),
            origins=arr(STRING),
            streams={**arr(STRING), "description": "declared stream names, kept as sent"},
            stream_patterns={
                **arr(STRING),
                "description": "declared stream names as globs (* and ? match letters, "
                "digits, _ and -)",
            },
            k={"type": "integer", "description": "the k in force today"},
            k_pending={
                **nullable("object"),
                "description": "a changed k and the UTC day it takes effect (the day after "
                "the change, so that no window mixes two k); null when none is pending",
                "properties": {
                    "k": {"type": "integer"},
                    "from": {"type": "string", "format": "date"},
                },
            },
            retention_days={"type": "integer"},
            deleted=BOOL,
            created_at=TIME,
            privacy=PRIVACY,
        ),
        "Token": open_obj(
            ["token_id", "prefix"],
            account_id=STRING,
            token_id=STRING,
            prefix={**STRING, "description": "the first characters, to recognise it"},
            created_at=TIME,
            revoked=BOOL,
            api_token={**STRING, "description": "only when created or rotated; shown once"},
            revoked_token_id={**STRING, "description": "rotation: the token it replaces"},
        ),
        "Receipt": open_obj(
            ["account_id", "tables", "rows_deleted", "verified_zero", "finished_at"],
            account_id=STRING,
            tables=arr(STRING),
            rows_deleted={"type": "object", "additionalProperties": INT},
            verified_zero={"const": True},
            finished_at=TIME,
        ),
        "Audit": open_obj(
            ["account_id", "entries"],
            account_id=STRING,
            retention_days={"type": "integer"},
            entries=arr(
                obj(
                    ["time", "actor", "action", "summary"],
                    time=TIME,
                    actor={**STRING, "description": "token prefix or 'admin'"},
                    action=STRING,
                    summary={"type": "object", "description": "the request's parameters"},
                )
            ),
        ),
        "Register": {
            "type": "object",
            "description": "the data register: each category of data the service touches, "
            "where it lives, for how long and why; what is stored and where",
        },
        "Flush": open_obj(
            ["groups", "rows"],
            groups=INT,
            rows=INT,
            tombstones=INT,
            spooled=INT,
        ),
        "Health": open_obj(
            ["status"],
            status={"enum": ["ok", "degraded"]},
            clickhouse={"enum": ["up", "down"]},
        ),
    }


def _report_paths() -> dict[str, Any]:
    cors = {"Access-Control-Allow-Origin": {"schema": STRING, "description": "the page's origin"}}
    return {
        "/v1/r/{embed_key}": {
            "parameters": [EMBED_KEY],
            "post": {
                "tags": ["reports"],
                "summary": "Send a player's CMCD v2 report, plain or sealed with HPKE",
                "operationId": "postReport",
                "parameters": [
                    query("player", {"type": "string", "maxLength": 64}, "the player's name")
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/cmcd": {
                            "schema": {
                                **STRING,
                                "description": "CMCD v2 event mode, one line an event",
                            }
                        },
                        "application/vnd.streamtally.sealed": {
                            "schema": {**BINARY, "description": "hdr || enc || ciphertext"}
                        },
                    },
                },
                "responses": {
                    "204": {"description": "accepted", "headers": cors},
                    "400": problem("malformed: the line and key are named"),
                    "401": problem("unknown embed key"),
                    "403": problem("the page's origin is not among the account's origins"),
                    "404": problem("unknown embed key"),
                    "410": problem("the account is deleted: stop sending"),
                    "413": problem("body over the limit"),
                    "415": problem("wrong Content-Type"),
                    "422": problem("sealed body replayed"),
                    "429": problem("rate limited; see Retry-After"),
                    "503": problem("cannot accept now; see Retry-After"),
                },
            },
            "options": {
                "tags": ["reports"],
                "summary": "CORS preflight for a player on one of the account's origins",
                "operationId": "preflightReport",
                "responses": {
                    "204": {
                        "description": "allowed (long Access-Control-Max-Age)",
                        "headers": cors,
                    },
                    "403": problem("the origin is not allowed"),
                    "404": problem("unknown embed key"),
                },
            },
        },
        "/v1/keys": {
            "get": {
                "tags": ["reports"],
                "summary": "The HPKE key configurations (RFC 9458 application/ohttp-keys)",
                "operationId": "getKeys",
                "responses": {
                    "200": {
                        "description": "the current keys, current first",
                        "content": {"application/ohttp-keys": {"schema": BINARY}},
                    }
                },
            }
        },
    }


def _service_paths() -> dict[str, Any]:
    return {
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "summary": "Liveness and whether reports are accepted",
                "operationId": "health",
                "responses": {
                    "200": json_body(ref("Health"), "accepting reports"),
                    "503": json_body(ref("Health"), "degraded: not accepting reports"),
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "tags": ["operations"],
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": json_body({"type": "object"}, "the OpenAPI 3.1 document")},
            }
        },
        "/v1/register": {
            "get": {
                "tags": ["governance"],
                "summary": "The data register (also docs/privacy.md), generated from the code",
                "operationId": "register",
                "responses": {"200": json_body(ref("Register"), "the data register")},
            }
        },
        "/": {
            "get": {
                "tags": ["dashboard"],
                "summary": "The dashboard page (sign in with an API token, kept in sessionStorage)",
                "operationId": "dashboard",
                "responses": {
                    "200": {"description": "HTML", "content": {"text/html": {"schema": STRING}}},
                    "304": {"description": "not modified (ETag)"},
                },
            }
        },
        "/static/{path}": {
            "get": {
                "tags": ["dashboard"],
                "summary": "A file of the dashboard (bundled; no third-party requests)",
                "operationId": "dashboardFile",
                "parameters": [path_param("path", "the file, e.g. app.js")],
                "responses": {
                    "200": {"description": "the file", "content": {"*/*": {"schema": STRING}}},
                    "304": {"description": "not modified (ETag)"},
                    "404": {
                        "description": "no such file",
                        "content": {
                            "application/problem+json": {"schema": ref("Problem")},
                            "text/plain": {"schema": STRING},  # a path the route cannot match
                        },
                    },
                },
            }
        },
    }


def _customer_paths() -> dict[str, Any]:
    range_params = [FROM, TO]
    return {
        "/v1/stats": {
            "get": {
                "tags": ["customer"],
                "summary": "k-anonymous statistics of the account over time",
                "description": (
                    "Rows are the windows overlapping [from, to) at the chosen granularity "
                    "(`auto`: minute up to 3 hours, hour up to 7 days, else day). Without "
                    "`by`, one row per window and stream; with `by`, each dimension gives its "
                    "own rows carrying that dimension's key. Cells under k are never stored: "
                    "`hidden` says how many viewers the breakdowns leave out. At most "
                    f"{MAX_WINDOWS['minute']} minute, {MAX_WINDOWS['hour']} hour or "
                    f"{MAX_WINDOWS['day']} day windows. Each read is audited."
                ),
                "operationId": "getStats",
                "security": API,
                "parameters": [
                    query("from", TIME, "start of the range, ISO 8601; default `to` - 1 day"),
                    TO,
                    query(
                        "granularity",
                        {"enum": list(GRANULARITY_CHOICES), "default": "auto"},
                        "window size; `auto` picks by the range",
                    ),
                    STREAM,
                    query(
                        "by",
                        STRING,
                        "comma-separated breakdowns: " + ", ".join(BREAKDOWN_DIMENSIONS),
                    ),
                    query(
                        "metrics",
                        STRING,
                        "comma-separated metrics (default all): " + ", ".join(METRICS),
                    ),
                    query("format", {"enum": list(FORMATS), "default": "json"}, "json or csv"),
                ],
                "responses": {
                    "200": {
                        "description": (
                            "JSON, or CSV with a header row (window_start, stream, the `by` "
                            "dimensions, the metrics; maps as JSON; empty for none). dp "
                            "accounts' CSV adds, for each chosen noisy metric (views, "
                            "unique_viewers, playing_seconds, failures), `<metric>_noise_scale` "
                            "and `<metric>_ci95`: the row's `noise` of the JSON, flat; empty in "
                            "rows without noise (minutes, days before dp applied). k accounts' "
                            "CSV has no such columns"
                        ),
                        "headers": {
                            "StreamTally-Viewers-Not-In-Breakdown": {
                                "schema": INT,
                                "description": "CSV only: hidden.viewers_not_in_breakdown",
                            },
                            "StreamTally-K": {"schema": INT, "description": "CSV only: k"},
                        },
                        "content": {
                            "application/json": {"schema": ref("Stats")},
                            "text/csv": {"schema": STRING},
                        },
                    },
                    "400": BAD_REQUEST,
                    "401": NO_TOKEN,
                },
            }
        },
        "/v1/streams": {
            "get": {
                "tags": ["customer"],
                "summary": "The account's streams with totals over a range (day cells)",
                "operationId": "getStreams",
                "security": API,
                "parameters": [
                    query("from", TIME, "start of the range; default `to` - 30 days"),
                    TO,
                ],
                "responses": {
                    "200": json_body(ref("Streams"), "streams, most viewed first"),
                    "400": BAD_REQUEST,
                    "401": NO_TOKEN,
                },
            }
        },
        "/v1/realtime": {
            "get": {
                "tags": ["customer"],
                "summary": "Concurrent viewers and failures per minute over the last minutes",
                "description": REALTIME_NOTE,
                "operationId": "getRealtime",
                "security": API,
                "parameters": [
                    query(
                        "minutes",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": REALTIME_MAX,
                            "default": REALTIME_DEFAULT,
                        },
                        "how many minutes, the current one included",
                    ),
                    STREAM,
                ],
                "responses": {
                    "200": json_body(ref("Realtime"), "one entry per minute, oldest first"),
                    "400": BAD_REQUEST,
                    "401": NO_TOKEN,
                },
            }
        },
        "/v1/export": {
            "get": {
                "tags": ["customer"],
                "summary": "Every aggregate of the account, formatted by ClickHouse",
                "description": (
                    "Streams every stored cell of the account (all granularities, rows of "
                    "every process run added up, deleted cells left out) as an attachment. "
                    "The manifest (schema, k, retention, time of export, row count) is the "
                    "first line of an ndjson export; for csv and parquet it is in the "
                    f"`{MANIFEST_HEADER}` header (base64url of the JSON, no padding), and "
                    "`format=manifest` answers it alone. A transfer that breaks part way "
                    "ends without its final chunk. Each export is audited. A dp account's "
                    "export has 8 more columns after the cells' ones: `views_noise_scale`, "
                    "`views_ci95`, `unique_viewers_noise_scale`, `unique_viewers_ci95`, "
                    "`playing_seconds_noise_scale`, `playing_seconds_ci95`, "
                    "`failures_noise_scale`, `failures_ci95` (Nullable(Float64)): the scale of "
                    "the discrete Laplace noise on that metric and the half-width of its 95 % "
                    "interval (the true value lies within value ± ci95 in 95 % of rows), the "
                    "numbers the stats API gives the same row; null (ndjson, parquet) or empty "
                    "(csv) in rows without noise (minute rows, days before dp applied). The "
                    "manifest's schema describes every column. k accounts' exports have no "
                    "such columns."
                ),
                "operationId": "export",
                "security": API,
                "parameters": [
                    query(
                        "format",
                        {"enum": list(EXPORT_FORMATS), "default": "ndjson"},
                        "ndjson, csv, parquet, or manifest",
                    )
                ],
                "responses": {
                    "200": {
                        "description": "the export (Content-Disposition: attachment)",
                        "headers": {
                            MANIFEST_HEADER: {
                                "schema": STRING,
                                "description": "csv and parquet: base64url of the manifest JSON",
                            }
                        },
                        "content": {
                            "application/x-ndjson": {
                                "schema": {
                                    **STRING,
                                    "description": "line 1: the manifest; then cells",
                                }
                            },
                            "text/csv": {"schema": STRING},
                            "application/vnd.apache.parquet": {"schema": BINARY},
                            "application/json": {"schema": ref("Manifest")},
                        },
                    },
                    "400": BAD_REQUEST,
                    "401": NO_TOKEN,
                },
            }
        },
        "/v1/audit": {
            "get": {
                "tags": ["governance"],
                "summary": "The account's audit log, newest first",
                "operationId": "getAudit",
                "security": API,
                "parameters": [
                    *range_params,
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "entries"),
                ],
                "responses": {
                    "200": json_body(ref("Audit"), "entries, newest first"),
                    "400": BAD_REQUEST,
                    "401": NO_TOKEN,
                },
            }
        },
        "/v1/privacy/budget": {
            "get": {
                "tags": ["governance"],
                "summary": "The account's privacy budget per UTC day (dp mode)",
                "operationId": "getPrivacyBudget",
                "security": API,
                "responses": {
                    "200": json_body(
                        obj(
                            ["account_id", "privacy", "days"],
                            account_id=STRING,
                            privacy=PRIVACY,
                            days=arr(
                                obj(
                                    [
                                        "day",
                                        "epsilon_per_day",
                                        "epsilon_spent",
                                        "delta_spent",
                                        "parts_released",
                                        "parts_held",
                                        "spent",
                                    ],
                                    day={"type": "string", "format": "date"},
                                    epsilon_per_day=NUMBER,
                                    epsilon_spent={
                                        **NUMBER,
                                        "description": "the largest epsilon any one viewer "
                                        "key of the day has spent",
                                    },
                                    delta_spent=NUMBER,
                                    parts_released=INT,
                                    parts_held=INT,
                                    spent=BOOL,
                                )
                            ),
                        ),
                        "the budget, day by day",
                    ),
                    "401": NO_TOKEN,
                },
            }
        },
        "/v1/account": {
            "delete": {
                "tags": ["customer"],
                "summary": "Delete the caller's account and purge every row of it",
                "operationId": "deleteOwnAccount",
                "security": API,
                "responses": {
                    "200": json_body(ref("Receipt"), "the purge receipt"),
                    "401": NO_TOKEN,
                },
            }
        },
    }


def _admin_paths() -> dict[str, Any]:
    account_in = obj(
        ["name"],
        name={"type": "string", "minLength": 1},
        origins=arr(STRING),
        streams={**arr(STRING), "description": "declared stream names, kept as sent"},
        stream_patterns={
            **arr(STRING),
            "description": "declared stream names as globs (* and ? match letters, "
            "digits, _ and -)",
        },
        k={"type": "integer", "minimum": 2},
        retention_days={"type": "integer", "minimum": 1},
        privacy=obj(
            None,
            mode={"enum": ["k", "dp"]},
            epsilon_per_day={"type": "number", "exclusiveMinimum": 0, "maximum": 20},
            delta={"type": "number", "exclusiveMinimum": 0, "maximum": 0.001},
        ),
    )
    account_change = {
        **account_in["properties"],
        "k": {
            "type": "integer",
            "minimum": 2,
            "description": "takes effect from the next UTC day (no window mixes two k)",
        },
    }
    account_patch = {
        "type": "object",
        "properties": account_change,
        "additionalProperties": False,
        "minProperties": 1,
    }
    live = {"404": problem("no such account"), "410": problem("the account is deleted")}
    return {
        "/v1/admin/accounts": {
            "post": {
                "tags": ["admin"],
                "summary": "Create an account (its first API token is in the answer only)",
                "operationId": "createAccount",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": account_in}},
                },
                "responses": {
                    "201": json_body(ref("AccountCreated"), "created"),
                    "400": BAD_REQUEST,
                    "401": NO_TOKEN,
                },
            },
            "get": {
                "tags": ["admin"],
                "summary": "Every account; deleted ones as tombstones",
                "operationId": "listAccounts",
                "security": ADMIN,
                "responses": {
                    "200": json_body(obj(["accounts"], accounts=arr(ref("Account"))), "accounts"),
                    "401": NO_TOKEN,
                },
            },
        },
        "/v1/admin/accounts/{account_id}": {
            "parameters": [ACCOUNT_ID],
            "delete": {
                "tags": ["admin"],
                "summary": "Delete an account and purge every row of it (again: same receipt)",
                "operationId": "deleteAccount",
                "security": ADMIN,
                "responses": {
                    "200": json_body(ref("Receipt"), "the purge receipt"),
                    "401": NO_TOKEN,
                    "404": problem("no such account"),
                },
            },
            "patch": {
                "tags": ["admin"],
                "summary": "Change an account's name, origins, retention or declared streams "
                "(now) and its k (from the next UTC day); audited",
                "operationId": "updateAccount",
                "security": ADMIN,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": account_patch}},
                },
                "responses": {
                    "200": json_body(ref("Account"), "the account as changed"),
                    "400": BAD_REQUEST,
                    "401": NO_TOKEN,
                    **live,
                },
            },
        },
        "/v1/admin/accounts/{account_id}/tokens": {
            "parameters": [ACCOUNT_ID],
            "post": {
                "tags": ["admin"],
                "summary": "A new API token (the plaintext is in this answer only)",
                "operationId": "createToken",
                "security": ADMIN,
                "responses": {
                    "201": json_body(ref("Token"), "created"),
                    "401": NO_TOKEN,
                    **live,
                },
            },
            "get": {
                "tags": ["admin"],
                "summary": "The account's tokens: prefixes only, never hashes",
                "operationId": "listTokens",
                "security": ADMIN,
                "responses": {
                    "200": json_body(
                        open_obj(["tokens"], account_id=STRING, tokens=arr(ref("Token"))),
                        "tokens",
                    ),
                    "401": NO_TOKEN,
                    **live,
                },
            },
        },
        "/v1/admin/accounts/{account_id}/tokens/{token_id}/rotate": {
            "parameters": [ACCOUNT_ID, TOKEN_ID],
            "post": {
                "tags": ["admin"],
                "summary": "Replace a live token by a new one; the old one is revoked",
                "operationId": "rotateToken",
                "security": ADMIN,
                "responses": {
                    "201": json_body(ref("Token"), "the new token"),
                    "401": NO_TOKEN,
                    **live,
                },
            },
        },
        "/v1/admin/accounts/{account_id}/tokens/{token_id}": {
            "parameters": [ACCOUNT_ID, TOKEN_ID],
            "delete": {
                "tags": ["admin"],
                "summary": "Revoke a token",
                "operationId": "revokeToken",
                "security": ADMIN,
                "responses": {
                    "200": json_body(ref("Token"), "the revoked token"),
                    "401": NO_TOKEN,
                    **live,
                },
            },
        },
        "/v1/admin/flush": {
            "post": {
                "tags": ["admin"],
                "summary": "Write every open cell now (the current minute included)",
                "operationId": "flush",
                "security": ADMIN,
                "responses": {"200": json_body(ref("Flush"), "what was written"), "401": NO_TOKEN},
            }
        },
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "StreamTally",
            "version": API_VERSION,
            "summary": "Privacy-preserving statistics for video streaming",
            "description": (
                "CMCD v2 reports in, k-anonymous aggregates out. Customer routes take the "
                "account's API token, admin routes the operator's admin token, both as "
                "`Authorization: Bearer <token>`. Errors are RFC 9457 problem documents. "
                "Prometheus metrics are not served here: only on the operator's own listener "
                "(setting metrics_listen, default 127.0.0.1:9464, path /metrics)."
            ),
            "license": {"name": "AGPL-3.0-or-later", "identifier": "AGPL-3.0-or-later"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "reports", "description": "players send reports"},
            {"name": "customer", "description": "an account's own numbers (API token)"},
            {"name": "governance", "description": "audit log and data register"},
            {"name": "admin", "description": "the operator (admin token)"},
            {"name": "operations", "description": "health, this document"},
            {"name": "dashboard", "description": "the customer's web page"},
        ],
        "paths": {
            **_report_paths(),
            **_service_paths(),
            **_customer_paths(),
            **_admin_paths(),
        },
        "components": {
            "securitySchemes": {
                "apiToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an account's API token: grants that account's data only",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the operator's admin token",
                },
            },
            "schemas": _schemas(),
        },
    }


@routes.get("/v1/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps(document()),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )
