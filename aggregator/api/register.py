"""The data register: every category of data StreamTally touches, where it lives, how long,
and why — one source for ``GET /v1/register`` and ``docs/privacy.md``.

``python -m aggregator.api.register --update docs/privacy.md`` regenerates the register part of
the document (below its marker line, from the settings' defaults; the privacy model above
the marker is written by hand); the route serves the same register with the running
service's settings.
The CMCD part is generated from ``collector.cmcd.KNOWN_KEYS`` and the storage part from the
migrations, so a key or column cannot be accepted or stored without being listed; the tests
(tests/aggregator/api/test_register.py) fail when a header, query parameter, request attribute,
CMCD key, hand-over field or column is read or stored but not described here.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from aggregator.config import BREAKDOWN_DIMENSIONS, AggregatorConfig
from aggregator.opmetrics import COARSE_FLOOR, EXPOSURE
from aggregator.release.noise import BOUNDS, DEFAULT_DELTA, DEFAULT_EPSILON_PER_DAY, SHARES
from aggregator.storage.migrate import _HISTORY_TABLE, load_migrations
from collector.cmcd import KNOWN_KEYS
from collector.config import CollectorConfig
from collector.useragent import CACHE_SIZE as UA_CACHE_SIZE

routes = web.RouteTableDef()

AUDIT_RETENTION_DEFAULT = 400  # aggregator/api/audit.py's fallback until the setting exists


@dataclass(frozen=True, slots=True)
class Category:
    """One category of data: what it is, what it is read from, where it lives, for how long,
    for what purpose, and whether any of it is written to disk."""

    name: str
    description: str
    fields: tuple[str, ...]  # header:X, query:x, path:x, request:attr, cmcd:key, report:f ...
    where: str
    retention: str
    purpose: str
    stored: str  # what reaches disk or ClickHouse: "nothing" or what exactly


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    purpose: str
    retention: str
    columns: dict[str, str]  # column -> description


def _days(seconds: float) -> str:
    if seconds % 86400 == 0:
        return f"{int(seconds // 86400)} days"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} hours"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} minutes"
    return f"{seconds:g} seconds"


def _settings(
    collector: CollectorConfig | None, aggregator: AggregatorConfig | None
) -> tuple[CollectorConfig, AggregatorConfig, int]:
    c = collector if collector is not None else CollectorConfig()
    a = aggregator if aggregator is not None else AggregatorConfig()
    audit_days = int(getattr(a, "audit_retention_days", AUDIT_RETENTION_DEFAULT))
    return c, a, audit_days


# ---- categories --------------------------------------------------------------------------------

REQUEST_ONLY = "only while the report is processed (well under a second); then dropped"


def categories(
    collector: CollectorConfig | None = None, aggregator: AggregatorConfig | None = None
) -> list[Category]:
    c, a, audit_days = _settings(collector, aggregator)
    bucket = c.rate_limit_burst / c.rate_limit_per_second
    cats = [
        Category(
            "IP address",
            "The viewer's IP address: the connection's peer address, or the client named in "
            "X-Forwarded-For when the peer is a trusted proxy (setting trusted_proxies).",
            ("request:remote", "header:X-Forwarded-For", "report:ip"),
            "process memory of the collector",
            REQUEST_ONLY,
            "country of the viewer (in-memory lookup, no network); input of the viewer key, "
            "of the per-address rate-limit handle and, for reports without a sid, of the "
            "rate limiter's client handle (keyed hashes)",
            "nothing: never logged, written, put in a metric, an error or ClickHouse",
        ),
        Category(
            "User agent",
            "The User-Agent request header.",
            ("header:User-Agent", "report:user_agent"),
            "process memory of the collector",
            f"while the report is processed; the classification cache (collector/"
            f"useragent.py) also keeps up to {UA_CACHE_SIZE:,} distinct user-agent strings, "
            "the most recently seen, with no time, address, viewer or report linked to them, "
            "until newer ones push them out or the process stops (a hot restart does not "
            "hand them over)",
            "device class, OS family and browser family (small fixed sets); bot filtering; "
            "input of the viewer key and, for reports without a sid, of the rate limiter's "
            "client handle",
            "nothing: only the derived classes go on",
        ),
        Category(
            "Client hints",
            "Sec-CH-UA, Sec-CH-UA-Mobile, Sec-CH-UA-Platform and other sec-ch-ua* headers a "
            "browser may send.",
            ("header:Sec-CH-UA", "header:Sec-CH-UA-Mobile", "header:Sec-CH-UA-Platform"),
            "received by the HTTP server with the request; not read by StreamTally",
            REQUEST_ONLY,
            "none",
            "nothing",
        ),
        Category(
            "Accept-Language",
            "The browser's language preferences.",
            ("header:Accept-Language",),
            "received with the request; not read",
            REQUEST_ONLY,
            "none",
            "nothing",
        ),
        Category(
            "Referer",
            "The page the report was sent from, as the browser states it.",
            ("header:Referer",),
            "received with the request; not read (the access log leaves it out)",
            REQUEST_ONLY,
            "none",
            "nothing",
        ),
        Category(
            "Origin",
            "The Origin header of the embedding page.",
            ("header:Origin", "report:origin"),
            "process memory of the collector",
            REQUEST_ONLY,
            "checked against the account's allowed origins (403 otherwise) and echoed in the "
            "CORS answer",
            "nothing",
        ),
        Category(
            "Request metadata",
            "Content-Type and Content-Length of a report, the embed key in its path (the "
            "account's public key) and the ?player= query parameter.",
            (
                "header:Content-Type",
                "request:content_length",
                "path:embed_key",
                "query:player",
                "report:content_type",
                "report:embed_key",
                "report:player",
                "report:arrival",
                "report:account",
            ),
            "process memory of the collector; the access log keeps method, path (with the "
            "public embed key), status, size and duration",
            "the access log's lifetime (the operator's log retention)",
            "choosing the account, the parser and the player dimension; answering 413/415",
            "the player as one of a fixed set of names in the aggregates",
        ),
        Category(
            "Report body (plain)",
            "The CMCD v2 event-mode payload (application/cmcd), one event per line.",
            ("request:content", "report:body", "report:plaintext"),
            "process memory of the collector",
            REQUEST_ONLY,
            "parsed into events; only the keys listed under CMCD keys are read",
            "nothing: the body is never logged or written",
        ),
        Category(
            "Report body (sealed)",
            "An HPKE-sealed CMCD payload (application/vnd.streamtally.sealed): key id, "
            "encapsulated key (enc) and ciphertext.",
            ("request:content", "report:body", "report:sealed"),
            "process memory of the collector; 60 bits of each enc in the replay guard",
            f"the body: {REQUEST_ONLY}; the enc bits: {_days(c.replay_window_seconds)} to "
            f"twice that (setting replay_window_seconds)",
            "opened with the service's HPKE key, then treated as a plain body; the enc bits "
            "refuse a replayed body (422)",
            "nothing",
        ),
        Category(
            "Session id (sid)",
            "CMCD's per-playback session id chosen by the player.",
            ("cmcd:sid", "report:sessions", "report:handles"),
            "process memory: turned into a 60-bit keyed hash of (account, sid) under a "
            "per-process random secret (session handle) right after parsing",
            f"the sid: {REQUEST_ONLY}; the session handle and its state: until the session "
            f"is idle for {_days(c.session_idle_seconds)} (setting session_idle_seconds); "
            "its rate-limit bucket: until full again (burst / rate seconds)",
            "counting each event once (sn de-duplication) and sessions: views, startup "
            "time, rebuffering, playing time; the per-session rate limit (429)",
            "nothing",
        ),
        Category(
            "Viewer key",
            "A 64-bit keyed BLAKE2b hash of (account, IP address, user agent) under a random "
            "secret of the UTC day that exists only in memory.",
            ("event:viewer", "report:viewer"),
            "process memory of the aggregator (open cells' distinct-viewer sets); in a "
            "cluster also of a collector, in the events it holds for their shard until the "
            "shard acknowledges them; during a hot restart (SIGHUP) of either also anonymous "
            "memory of the same process (memfd), never a file",
            "until the cell's window is written; the day's secret is destroyed "
            f"{_days(c.viewer_key_grace_seconds)} after the UTC day ends (setting "
            "viewer_key_grace_seconds), so a day's keys cannot be recomputed",
            "counting distinct viewers per cell; the k-anonymity decision",
            "nothing: only counts (unique_viewers) are written",
        ),
        Category(
            "API requests passed on (serve --workers)",
            "With collector worker processes, a request for the customer or admin API that "
            "reaches a worker (headers and body as sent: the bearer token, the JSON body) is "
            "passed on unchanged to the aggregator process on the loopback interface, and the "
            "answer back; hop-by-hop headers are dropped.",
            ("request:read",),
            "process memory of the worker while the request is passed on",
            "the request's duration",
            "serving the API on the same port as the reports",
            "nothing",
        ),
        Category(
            "Viewer secret",
            "The 32-byte random secret of each UTC day behind the viewer keys, and the "
            "per-process secret behind session and client handles.",
            (),
            "process memory only; never written, logged or pickled. A hot restart (SIGHUP) "
            "hands it to the new code of the same process through anonymous memory (memfd, "
            "closed and the buffers zeroed once read), never a file (a restarted collector "
            "gets its shards' secrets from them again). In a cluster the shard "
            "that owns an account draws it and sends it to the collectors over the cluster "
            "link, sealed (AES-256-GCM) under the link's session key; they hold it in memory "
            "and destroy it with the day. A cold restart (stop, crash) loses it on purpose: a "
            "viewer seen before and after one counts twice in that day's unique viewers",
            "the day's secret: until the day ends plus the grace period, then zeroed; the "
            "per-process secret: the process's lifetime, hot restarts included",
            "keyed hashing (viewer keys, session handles, rate-limit address and client handles)",
            "nothing",
        ),
        Category(
            "Rate-limit state",
            "Per client (keyed hash of IP address and user agent) one number: when its token "
            "bucket is full again.",
            (),
            "process memory of the collector",
            f"about {bucket:g} seconds after the client's last report (burst / rate)",
            "429 for clients over rate_limit_per_second",
            "nothing",
        ),
        Category(
            "Media request URLs (rr events)",
            "The url key of CMCD rr (request response) events: the URL of a segment, which "
            "may carry tokens.",
            ("cmcd:url",),
            "process memory of the collector",
            REQUEST_ONLY,
            "checked for syntax; at most its host is kept, and only for accounts that opt "
            "in to CDN statistics (not offered yet: nothing is kept)",
            "nothing",
        ),
        Category(
            "CMCD keys",
            "Every CMCD key StreamTally reads from a report (see the CMCD keys table); any "
            "other key is ignored.",
            (*(f"cmcd:{key}" for key in KNOWN_KEYS), "report:parsed", "report:fresh"),
            "process memory: events, then per-session state and open cells",
            "per-session state until the session is idle for "
            f"{_days(c.session_idle_seconds)}; open cells until their window is written",
            "the statistics listed in the aggregates",
            "only as aggregates (see cells)",
        ),
        Category(
            "Free text from clients",
            "Values a player or a viewer can type: the stream name (cid), error code (ec), "
            "event type (e), player state (sta) and the ?player= parameter. Anything typed "
            "is a way to put an identifier into storage, so each is reduced in the strip step. "
            "ec, e and sta are kept only if they are in the players' own vocabularies "
            "(collector/vocab.py: hls.js ErrorDetails, Shaka error codes, dash.js and "
            "Video.js codes as the snippet sends them (dash-N, vjs-N), HTML MediaError codes "
            "and names, HTTP statuses 100-599, CMCD v2 event types and states), else (other); "
            "?player= is one of a fixed set of names, else (unknown). A stream name is "
            "screened (collector/screen.py): a name with anything shaped like an e-mail "
            "address, an IP address (v4, v6, MAC), a URL with a query or user info, a run of 7 "
            "or more digits or a UUID, or longer than 128 characters, becomes (redacted), "
            "unless the account declared it (exact names, or patterns whose * and ? stand for "
            "letters, digits, _ and -). Media request URLs keep at most a host that passes "
            "the same screen. Browser, OS and device come from fixed sets (else Other), never "
            "from the user agent's text.",
            ("cmcd:cid", "cmcd:ec", "cmcd:e", "cmcd:sta", "query:player"),
            "process memory of the collector",
            REQUEST_ONLY,
            "statistics per stream, per error code and per player",
            "declared or screened stream names; codes, states and players from fixed sets; "
            "what was screened is counted in streamtally_values_screened_total{field,reason}",
        ),
        Category(
            "Hand-over events",
            "What the collector hands the aggregator after the strip step: no IP, user agent, "
            "sid or URL; coarse dimensions and opaque handles.",
            (*(f"event:{name}" for name in _EVENT_FIELDS), "report:dims"),
            "process memory of the aggregator",
            "until the session ends and the cells are written",
            "sessions and aggregate cells",
            "only as aggregates (see cells)",
        ),
        Category(
            "HPKE private keys",
            "The service's X25519 keys that open sealed reports (service-wide, not per account).",
            (),
            "data_dir/keys/key-<id>.json, mode 0600, folder mode 0700",
            f"current for {_days(c.key_rotation_seconds)} (setting key_rotation_seconds; the "
            f"service rotates by itself), then {_days(c.key_overlap_seconds)} more (setting "
            "key_overlap_seconds); then the file is overwritten with zeros and unlinked and the "
            "key dropped from memory, whether or not anyone rotates again",
            "opening sealed reports",
            "the key files",
        ),
        Category(
            "API token hashes",
            "SHA-256 of each account's API tokens, with the token's first 8 characters as a "
            "shown prefix; the tokens themselves are shown once and never stored.",
            ("header:Authorization",),
            "ClickHouse table api_tokens; process memory",
            "until revoked (a revoked token keeps no hash) or the account is deleted",
            "authenticating customers (compared in constant time)",
            "hash and prefix",
        ),
        Category(
            "Admin token hash",
            "SHA-256 of the operator's admin token.",
            ("header:Authorization",),
            "data_dir/admin-token.sha256",
            "until the operator replaces it",
            "authenticating the admin API",
            "the hash",
        ),
        Category(
            "Aggregates",
            "k-anonymous statistics per account, stream, window and breakdown "
            f"({', '.join(BREAKDOWN_DIMENSIONS)}): counts and sums, no viewer keys.",
            (),
            "ClickHouse table cells",
            f"the account's retention (default {a.retention_days} days, setting "
            "retention_days), by TTL; all of them when the account is deleted",
            "the customer's statistics, dashboard and export",
            f"only cells with at least k distinct viewers (default k {a.default_k}, never "
            "below 2); smaller cells generalised to (other) or suppressed",
        ),
        Category(
            "Spool",
            "Finished, k-anonymous cell batches waiting while ClickHouse is unreachable.",
            (),
            "data_dir/spool/*.rec (CRC-checked files)",
            "until ClickHouse takes them (bounded by spool_max_bytes)",
            "losing no counts during a ClickHouse outage",
            "aggregate rows only, never a viewer key",
        ),
        Category(
            "Stop mark",
            "The time the last run stopped (SIGTERM), one number: a cold start credits the "
            "playing time of playbacks that were going on from then to their next heartbeat. "
            "A hot restart (SIGHUP) hands its whole state over in anonymous memory instead, "
            "never through a file.",
            (),
            "data_dir/stopped_at",
            "until the next start reads it",
            "counting a playback that outlives a restart once, with its playing time",
            "a unix time only, nothing about viewers",
        ),
        Category(
            "Operator metrics",
            "Prometheus metrics, served only on the operator's own listener (setting "
            "metrics_listen), never on the public port. No sample names an account, a stream "
            "or anything about a client, and nothing in them moves per viewer of one "
            "account: every metric family is classified in aggregator/opmetrics.py (one not "
            "classified is not shown; see the table below). Gauges of in-memory state from "
            f"before the k decision (sessions, open cells) are coarse: 0 below {COARSE_FLOOR}, "
            "then rounded down to 2 significant figures, so one viewer more or less moves "
            "them only at a step and then by a whole step (at least 10), which reads the same "
            "as ten viewers; counts of cells below k are not shown at all. Request counters "
            "and timings (reports and events by outcome, time per pipeline step, CPU time) "
            "are exact: any viewer's report moves them, but they count requests summed over "
            "every account, not people, with no label naming an account, stream or client: "
            "the traffic volume a load balancer or network counter in front of the service "
            "sees anyway; coarse, they would be useless for rates and error alerts. The "
            "write-side metrics (batches written or spooled, spool size, flush and write "
            "times) are functions of the k-anonymous rows ClickHouse stores anyway.",
            (),
            f"process memory; read from metrics_listen ({c.metrics_listen or 'off'}) by the "
            "operator's Prometheus",
            "in memory while the process runs; afterwards as long as the operator's "
            "monitoring keeps them",
            "operating the service: load, errors, capacity, ClickHouse outages",
            "nothing by StreamTally itself",
        ),
        Category(
            "Accounts",
            "Account name, public embed key, allowed origins, declared stream names and "
            "patterns, k and retention.",
            (),
            "ClickHouse table accounts; process memory",
            "until the account is deleted; then only a tombstone (account id and the "
            "SHA-256 of the embed key, so reports get 410)",
            "admitting reports; serving the customer",
            "the account row",
        ),
        Category(
            "Privacy budget",
            "dp accounts only: for each UTC day, epsilon and delta spent (the largest spend "
            "of any one viewer key), parts released and held back. Per-viewer spends are "
            "kept in process memory only, keyed by the day's viewer keys, and dropped with "
            "the day.",
            (),
            "ClickHouse table privacy_budget; process memory (per viewer, that day only)",
            "until the account is deleted",
            "stopping releases once a viewer-day's budget is spent; showing the customer "
            "what was spent (GET /v1/privacy/budget)",
            "the day's totals, no viewer key",
        ),
        Category(
            "Audit log",
            "Every customer read, export, purge, token and account change: time, account, "
            "actor (token prefix or admin), action, request parameters. No viewer data.",
            (),
            "ClickHouse table audit",
            f"{audit_days} days (setting audit_retention_days), by TTL; deleted with the account",
            "accountability",
            "the audit rows",
        ),
        Category(
            "Purge receipts",
            "For each deleted account: who deleted it, when, the tables purged, rows deleted "
            "and the verification: per table, no row left in active parts and no outdated or "
            "detached part from before the purge left on disk (the receipt waits until "
            "ClickHouse has removed them).",
            (),
            "ClickHouse table purges",
            "kept (the proof of deletion)",
            "accountability; resuming an interrupted purge",
            "the receipt",
        ),
    ]
    return cats


# Fields of collector.handover.Event (checked by the tests to stay in step).
_EVENT_FIELDS = (
    "account_id",
    "session",
    "viewer",
    "arrival",
    "stream",
    "kind",
    "dims",
    "ts_ms",
    "seq",
    "state",
    "bitrate_kbps",
    "buffer_ms",
    "startup_ms",
    "latency_ms",
    "playhead_ms",
    "rate",
    "error_code",
    "response_code",
    "ttfb_ms",
    "cdn_host",
)


# ---- tables ------------------------------------------------------------------------------------

_CELL_COLUMNS = {
    "account_id": "the account",
    "stream": "stream (CMCD cid)",
    "granularity": "minute, hour or day",
    "window_start": "start of the window (server arrival time, UTC)",
    "breakdown": "dimension of the breakdown ('' for the total): "
    + ", ".join(BREAKDOWN_DIMENSIONS),
    "value": "value of the dimension (a coarse class, or (other))",
    "views": "playback sessions started",
    "unique_viewers": "distinct viewers (>= k, in steps of k)",
    "playing_seconds": "time spent playing",
    "startup_hist": "histogram of video startup times",
    "rebuffer_count": "rebuffering events",
    "rebuffer_seconds": "time spent rebuffering",
    "failures": "sessions that failed",
    "failures_by_code": "failures per player error code",
    "exits_before_start": "sessions left before the video started",
    "bitrate_kbps_seconds": (
        "average of the viewers' own bitrates, times the time played (for the average)"
    ),
    "bitrate_seconds": "time with a known bitrate",
    "bitrate_changes": "bitrate switches",
    "latency_ms_sum": "sum of each viewer's average live latency",
    "latency_count": "viewers who sent live latency",
    "concurrent_peak": "most concurrent viewers in the window",
    "part": "the process run that wrote the row (random)",
    "retention_days": "the account's retention when written (TTL)",
    "version": "row version (newest wins)",
    "is_deleted": "1: the cell is no longer published",
}

_TABLES: dict[str, tuple[str, str, dict[str, str]]] = {
    "accounts": (
        "publisher accounts (one row per version)",
        "until deleted; then a tombstone",
        {
            "account_id": "the account's id",
            "name": "the account's name (blank in a tombstone)",
            "embed_key": "public embed key (its SHA-256 in a tombstone)",
            "origins": "allowed page origins (empty in a tombstone)",
            "streams": "declared stream names, kept as sent (empty in a tombstone)",
            "stream_patterns": "declared stream name globs, e.g. match-* (empty in a tombstone)",
            "k": "k-anonymity threshold (of the days before next_k_from, if a change is pending)",
            "next_k": "a changed k, in force from next_k_from on (0: no change pending)",
            "next_k_from": "the UTC day a changed k takes effect (the day after the change)",
            "retention_days": "retention of the account's aggregates",
            "privacy": "privacy mode: k (k-anonymity) or dp (differential privacy)",
            "epsilon_per_day": "dp: epsilon per viewer key and UTC day",
            "delta": "dp: delta per released part (the noisy threshold)",
            "privacy_from": "the UTC day from which the privacy settings apply",
            "deleted": "1 once deleted (reports get 410)",
            "created_at": "creation time",
            "version": "row version",
        },
    ),
    "api_tokens": (
        "API tokens, as SHA-256 only",
        "until the account is deleted",
        {
            "account_id": "the account",
            "token_id": "token id",
            "prefix": "first 8 characters, shown to tell tokens apart",
            "token_hash": "SHA-256 hex of the token ('' once revoked)",
            "created_at": "creation time",
            "revoked": "1 once revoked",
            "version": "row version",
        },
    ),
    "cells": ("k-anonymous aggregates", "the account's retention (TTL)", _CELL_COLUMNS),
    "privacy_budget": (
        "dp accounts: the privacy budget spent per UTC day (no viewer key)",
        "until the account is deleted",
        {
            "account_id": "the account",
            "day": "the UTC day",
            "epsilon_per_day": "the account's epsilon per viewer-day that day",
            "delta_per_part": "the account's delta per released part that day",
            "epsilon_spent": "the largest epsilon one viewer key of the day has spent",
            "delta_spent": "the largest delta one viewer key of the day has spent",
            "parts_released": "noisy parts released that day",
            "parts_held": "parts held back because a viewer's budget was spent",
            "version": "row version",
        },
    ),
    "audit": (
        "audit log",
        "audit_retention_days (TTL); deleted with the account",
        {
            "time": "when",
            "account_id": "the account",
            "actor": "token prefix or admin",
            "action": "what was done",
            "summary": "the request's parameters (JSON)",
            "retention_days": "retention when written (TTL)",
        },
    ),
    "purges": (
        "account purges and their receipts",
        "kept",
        {
            "account_id": "the deleted account",
            "actor": "who deleted it (token prefix or admin)",
            "started_at": "start of the purge",
            "finished_at": "end of the verified purge",
            "state": "running or done",
            "receipt": "the receipt (JSON)",
            "version": "row version",
        },
    ),
    "schema_migrations": (
        "applied schema migrations",
        "kept",
        {"version": "migration number", "name": "migration name", "applied_at": "when applied"},
    ),
}

_CREATE = re.compile(r"CREATE TABLE IF NOT EXISTS\s+(\w+)\s*\(", re.IGNORECASE)
_ADD_COLUMN = re.compile(
    r"ALTER TABLE\s+(\w+)\s+ADD COLUMN(?:\s+IF NOT EXISTS)?\s+`?(\w+)`?\s+(.+?)"
    r"(?:\s+(?:AFTER\s+\S+|FIRST|DEFAULT\s.*|CODEC\s*\(.*|COMMENT\s.*))?\s*$",
    re.IGNORECASE | re.DOTALL,
)


def _split_top(text: str) -> Iterator[str]:
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            yield text[start:i]
            start = i + 1
    yield text[start:]


def parse_columns(statement: str) -> tuple[str, dict[str, str]] | None:
    """(table, {column: type}) of a ``CREATE TABLE IF NOT EXISTS`` statement, or of an
    ``ALTER TABLE t ADD COLUMN [IF NOT EXISTS] c type [AFTER x]`` (one column), else None."""
    added = _ADD_COLUMN.match(statement.strip())
    if added is not None:
        return added.group(1), {added.group(2): " ".join(added.group(3).split())}
    match = _CREATE.search(statement)
    if match is None:
        return None
    depth, end = 1, match.end()
    while depth:
        depth += {"(": 1, ")": -1}.get(statement[end], 0)
        end += 1
    columns = {}
    for entry in _split_top(statement[match.end() : end - 1]):
        words = entry.split(None, 1)
        if len(words) == 2 and words[0].upper() not in ("INDEX", "PROJECTION", "CONSTRAINT"):
            columns[words[0].strip("`")] = " ".join(words[1].split())
    return match.group(1), columns


def schema() -> dict[str, dict[str, str]]:
    """Every table the migrations (and the migration history) create, with column types."""
    tables: dict[str, dict[str, str]] = {}
    statements = [_HISTORY_TABLE] + [s for m in load_migrations() for s in m.statements]
    for statement in statements:
        parsed = parse_columns(statement)
        if parsed is not None:
            tables.setdefault(parsed[0], {}).update(parsed[1])
    return tables


def tables() -> list[Table]:
    """The stored tables with a description of each column (undescribed ones say so)."""
    out = []
    for name, columns in sorted(schema().items()):
        purpose, retention, described = _TABLES.get(name, ("(not described)", "?", {}))
        out.append(
            Table(
                name,
                purpose,
                retention,
                {c: f"{described.get(c, '(not described)')} [{t}]" for c, t in columns.items()},
            )
        )
    return out


def described_columns() -> dict[str, set[str]]:
    return {name: set(cols) for name, (_, _, cols) in _TABLES.items()}


# ---- the register ------------------------------------------------------------------------------


def register(
    collector: CollectorConfig | None = None, aggregator: AggregatorConfig | None = None
) -> dict[str, Any]:
    c, a, audit_days = _settings(collector, aggregator)
    return {
        "service": "StreamTally",
        "source": "aggregator/api/register.py (CMCD keys from collector/cmcd.py, tables from "
        "aggregator/storage/migrations)",
        "stores": "aggregates only: k-anonymous cells; no IP address, user agent, session "
        "id, viewer key or report body is ever written",
        "k": {"default": a.default_k, "minimum": 2},
        "dp": {
            "modes": ["k", "dp"],
            "default_mode": "k",
            "epsilon_per_day_default": DEFAULT_EPSILON_PER_DAY,
            "delta_per_part_default": DEFAULT_DELTA,
            "unit": "one viewer key for one UTC day",
            "shares": dict(SHARES),
            "bounds_per_viewer_per_part": dict(BOUNDS),
        },
        "retention_days": {"aggregates_default": a.retention_days, "audit": audit_days},
        "where": "ClickHouse (clickhouse_url, or embedded in data_dir/clickhouse); data_dir "
        "for HPKE keys, the spool and the admin token hash",
        "categories": [
            {
                "name": cat.name,
                "description": cat.description,
                "fields": list(cat.fields),
                "where": cat.where,
                "retention": cat.retention,
                "purpose": cat.purpose,
                "stored": cat.stored,
            }
            for cat in categories(c, a)
        ],
        "cmcd_keys": [
            {
                "key": key,
                "type": str(spec.type),
                "meaning": spec.meaning,
                "identifying": spec.identifying,
            }
            for key, spec in KNOWN_KEYS.items()
        ],
        "tables": [
            {
                "name": t.name,
                "purpose": t.purpose,
                "retention": t.retention,
                "columns": t.columns,
            }
            for t in tables()
        ],
    }


def described_fields() -> set[str]:
    """Every field name any category describes (header:X, cmcd:k, ...)."""
    return {f for cat in categories() for f in cat.fields}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """docs/privacy.md: the register (with the settings' defaults) as Markdown."""
    reg = register()
    lines = [
        "## Data register",
        "",
        "Generated by `python -m aggregator.api.register --update docs/privacy.md` from "
        "`aggregator/api/register.py`; do not edit by hand. The running service serves the same "
        "register, with its own settings, at `GET /v1/register`.",
        "",
        f"- **What is stored:** {reg['stores']}.",
        f"- **k:** default {reg['k']['default']}, never below {reg['k']['minimum']}.",
        f"- **dp mode** (per account, opt-in): epsilon {reg['dp']['epsilon_per_day_default']} "
        f"per viewer key and UTC day by default, delta {reg['dp']['delta_per_part_default']} "
        "per released part; noise from OpenDP on every released hour and day part.",
        f"- **Retention:** aggregates {reg['retention_days']['aggregates_default']} days by "
        f"default (per account); audit log {reg['retention_days']['audit']} days.",
        f"- **Where:** {reg['where']}.",
        "",
        "### Categories of data",
        "",
    ]
    for cat in reg["categories"]:
        lines += [
            f"#### {cat['name']}",
            "",
            cat["description"],
            "",
            f"- Fields: {', '.join(f'`{f}`' for f in cat['fields']) or '(internal)'}",
            f"- Where: {cat['where']}",
            f"- How long: {cat['retention']}",
            f"- Purpose: {cat['purpose']}",
            f"- Stored: {cat['stored']}",
            "",
        ]
    lines += [
        "### CMCD keys read",
        "",
        "| key | type | meaning | identifying |",
        "|---|---|---|---|",
    ]
    for key in reg["cmcd_keys"]:
        lines.append(
            f"| `{key['key']}` | {_cell(key['type'])} | {_cell(key['meaning'])} | "
            f"{'yes' if key['identifying'] else 'no'} |"
        )
    lines += [
        "",
        "Any other CMCD key in a report is ignored.",
        "",
        "### Operator metrics",
        "",
        "What `GET /metrics` on metrics_listen shows of each metric family "
        "(aggregator/opmetrics.py; a counter's samples add `_total`).",
        "",
        "| family | shown | why |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{name}` | {exposure.kind} | {_cell(exposure.why)} |"
        for name, exposure in sorted(EXPOSURE.items())
    ]
    lines += ["", "### Stored tables", ""]
    for table in reg["tables"]:
        lines += [
            f"#### `{table['name']}`",
            "",
            f"{table['purpose']}; kept: {table['retention']}.",
            "",
            "| column | description |",
            "|---|---|",
        ]
        lines += [f"| `{c}` | {_cell(d)} |" for c, d in table["columns"].items()]
        lines.append("")
    return "\n".join(lines)


@routes.get("/v1/register")
async def get_register(request: web.Request) -> web.Response:
    """The data register (public)."""
    from aggregator.service import SERVICE
    from collector.app import COLLECTOR_CONFIG

    body = register(request.app.get(COLLECTOR_CONFIG), request.app[SERVICE].config)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


MARKER = "<!-- everything below this line is generated: "


def update(document: str) -> str:
    """``document`` with everything after its marker line replaced by :func:`markdown`."""
    head, found, _ = document.partition(MARKER)
    if not found:
        raise ValueError("the document has no marker line")
    marker_line = MARKER + _.split("\n", 1)[0]
    return head + marker_line + "\n\n" + markdown()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update"] and len(sys.argv) == 3:
        path = Path(sys.argv[2])
        path.write_text(update(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        sys.stdout.write(markdown())
