"""``GET /v1/export``: every aggregate of the account, formatted by ClickHouse, plus a manifest.

Formats: ``ndjson`` (ClickHouse ``JSONEachRow``), ``csv`` (``CSVWithNames``), ``parquet``;
``manifest`` answers only the manifest as JSON. The manifest (schema, k, retention, time of
export, row count) is the first line of an ndjson export (``{"manifest": {...}}``); for csv
and parquet it travels in the ``StreamTally-Manifest`` response header (base64url of the
JSON, no padding) and can be fetched on its own with ``format=manifest``.

Rows are the stored cells of every granularity, with the rows of every process run
(``part``) added up, read with FINAL so deleted cells are left out. They are all
k-anonymous: nothing below k is ever stored. A dp account's export has, after the cells'
columns, each noisy metric's noise scale and 95 % interval (``views_noise_scale``,
``views_ci95``, ... :mod:`aggregator.api.dp_rows`), the numbers the stats API shows; null
(ndjson, parquet) or empty (csv) in rows without noise (minutes, days before dp applied).

``streamtally export`` (see :func:`add_cli`) writes an export to a file with a progress bar.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import orjson
from aiohttp import web

from aggregator.api import audit
from aggregator.api.auth import require_account
from aggregator.api.dp_rows import export_noise, noise_descriptions
from aggregator.api.params import iso
from aggregator.counting.cells import PARTS_ADDED_UP
from aggregator.service import SERVICE
from aggregator.storage.accounts_store import utc_today
from collector.accounts import Account
from collector.errors import BadRequest, ConfigError, StreamTallyError

routes = web.RouteTableDef()
log = logging.getLogger("streamtally")

MANIFEST_HEADER: Final = "StreamTally-Manifest"
MANIFEST_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class ExportFormat:
    name: str
    clickhouse: str  # ClickHouse's output format
    content_type: str
    extension: str


FORMATS: Final = {
    f.name: f
    for f in (
        ExportFormat("ndjson", "JSONEachRow", "application/x-ndjson", "ndjson"),
        ExportFormat("csv", "CSVWithNames", "text/csv; charset=utf-8", "csv"),
        ExportFormat("parquet", "Parquet", "application/vnd.apache.parquet", "parquet"),
    )
}
FORMAT_CHOICES: Final = (*FORMATS, "manifest")

# What each exported column holds (the manifest's schema carries these beside the types).
COLUMNS: Final[dict[str, str]] = {
    "stream": "stream (content id), or '(other)' for streams merged below k",
    "granularity": "minute, hour or day",
    "window_start": "start of the window, UTC",
    "breakdown": "'' for the stream total, else country, device, os, browser or player",
    "value": "the breakdown's value ('' for the total), or '(other)' for values merged below k",
    "views": "playbacks started",
    "unique_viewers": "distinct viewers in the window, in steps of k (rounded down; >= k)",
    "playing_seconds": "time spent playing",
    "startup_hist": "video startup times: counts in 40 log-spaced buckets (50 ms .. 60 s)",
    "rebuffer_count": "stalls after startup",
    "rebuffer_seconds": "time spent stalled",
    "failures": "playback failures",
    "failures_by_code": "failures by error code (top codes, the rest under '(other)')",
    "exits_before_start": "playbacks abandoned before the video started",
    "bitrate_kbps_seconds": (
        "average bitrate (each viewer's own average, weighing the same) times bitrate_seconds"
    ),
    "bitrate_seconds": "seconds with a known bitrate (avg = bitrate_kbps_seconds / this)",
    "bitrate_changes": "rendition switches",
    "latency_ms_sum": "sum of each viewer's average live latency, ms",
    "latency_count": "viewers who sent live latency (avg = latency_ms_sum / this)",
    "concurrent_peak": "most viewers playing at once in the window (largest of the runs')",
    "retention_days": "days after window_start the row expires",
}

_AGGREGATES: Final = {**PARTS_ADDED_UP, "retention_days": "max(retention_days)"}
_KEYS: Final = ("stream", "granularity", "window_start", "breakdown", "value")

_SELECT_CELLS: Final = (
    "SELECT "
    + ", ".join(
        [*_KEYS, *(f"{_AGGREGATES[name]} AS {name}" for name in COLUMNS if name not in _KEYS)]
    )
    + "{runs} FROM cells FINAL WHERE account_id = {account:String} GROUP BY "
    + ", ".join(_KEYS)
)
EXPORT_SELECT: Final = _SELECT_CELLS.replace("{runs}", "")
_ORDER: Final = " ORDER BY granularity, window_start, stream, breakdown, value"
# integers as JSON numbers, not strings; times as ISO 8601 (2026-11-24T10:00:00Z); no
# value (the noise columns of rows without noise) as an empty CSV field
_SETTINGS: Final = (
    " SETTINGS output_format_json_quote_64bit_integers = 0, date_time_output_format = 'iso',"
    " format_csv_null_representation = ''"
)


def export_select(account: Account) -> tuple[str, dict[str, Any]]:
    """The export's rows (without ORDER BY) and its parameters: for a dp account with the
    noise columns of :func:`aggregator.api.dp_rows.export_noise` after the cells' columns."""
    params: dict[str, Any] = {"account": account.account_id}
    if account.privacy != "dp":
        return EXPORT_SELECT, params
    sql, noise = export_noise(account, _SELECT_CELLS.replace("{runs}", ", count() AS _runs"))
    return sql, {**params, **noise}


def column_descriptions(account: Account) -> dict[str, str]:
    """What each exported column of ``account`` holds."""
    if account.privacy != "dp":
        return COLUMNS
    return {**COLUMNS, **noise_descriptions()}


def encode_header(manifest: dict[str, Any]) -> str:
    """The manifest as a header value: base64url of its JSON, without padding."""
    return base64.urlsafe_b64encode(orjson.dumps(manifest)).rstrip(b"=").decode("ascii")


def decode_header(value: str) -> dict[str, Any]:
    """Inverse of :func:`encode_header`."""
    padded = value + "=" * (-len(value) % 4)
    manifest: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(padded))
    return manifest


async def build_manifest(
    request: web.Request, account: Account, fmt: str, exported_at: datetime
) -> dict[str, Any]:
    """Schema (from ClickHouse's DESCRIBE of the export query), k, retention, time, rows."""
    store = request.app[SERVICE].store
    select, params = export_select(account)
    described = await store.query_rows(f"DESCRIBE ({select})", params)
    counted = await store.query_rows(f"SELECT count() FROM ({select})", params)
    columns = column_descriptions(account)
    schema = [
        {"name": str(row[0]), "type": str(row[1]), "description": columns.get(str(row[0]), "")}
        for row in described
    ]
    return {
        "manifest_version": MANIFEST_VERSION,
        "account_id": account.account_id,
        "exported_at": iso(exported_at, "seconds"),
        "format": fmt,
        "k": account.k_on(utc_today()),
        "retention_days": account.retention_days,
        "rows": int(counted[0][0]) if counted else 0,
        "rows_note": "counted when the export started; cells written meanwhile may differ",
        "schema": schema,
        "contents": (
            "every k-anonymous aggregate cell of the account, all granularities, rows of "
            "every process run added up; nothing below k is stored, so none is exported"
        ),
    }


def _filename(account: Account, fmt: ExportFormat, exported_at: datetime) -> str:
    return (
        f"streamtally-{account.account_id}-{exported_at.strftime('%Y%m%dT%H%M%SZ')}.{fmt.extension}"
    )


@routes.get("/v1/export")
async def get_export(request: web.Request) -> web.StreamResponse:
    account = await require_account(request)
    name = request.query.get("format") or "ndjson"
    if name not in FORMAT_CHOICES:
        raise BadRequest(
            f"parameter 'format' must be one of {', '.join(FORMAT_CHOICES)}", key="format"
        )
    exported_at = datetime.now(UTC)
    manifest = await build_manifest(request, account, name, exported_at)
    await audit.record(request, account.account_id, "export", {"format": name})
    if name == "manifest":
        return web.Response(
            body=orjson.dumps({"manifest": manifest}), content_type="application/json"
        )

    fmt = FORMATS[name]
    store = request.app[SERVICE].store
    select, params = export_select(account)
    chunks = store.raw_stream(select + _ORDER + _SETTINGS, fmt.clickhouse, params)
    try:
        return await _send(request, chunks, manifest, fmt, _filename(account, fmt, exported_at))
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _send(
    request: web.Request,
    chunks: AsyncIterator[bytes],
    manifest: dict[str, Any],
    fmt: ExportFormat,
    filename: str,
) -> web.StreamResponse:
    # The first chunk before the headers: a failing query still gets a problem answer.
    first = await anext(aiter(chunks), b"")
    headers = {
        "Content-Type": fmt.content_type,
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    }
    if fmt.name != "ndjson":
        headers[MANIFEST_HEADER] = encode_header(manifest)
    response = web.StreamResponse(status=200, headers=headers)
    await response.prepare(request)
    try:
        if fmt.name == "ndjson":
            await response.write(orjson.dumps({"manifest": manifest}) + b"\n")
        if first:
            await response.write(first)
        async for chunk in chunks:
            await response.write(chunk)
    except Exception as exc:
        # The headers are out: the only honest signal left is a broken transfer (no final
        # chunk), which every client reports as an incomplete download.
        log.warning("an export stopped part way: %s", type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


# ---- streamtally export ------------------------------------------------------------------------


class Progress:
    """Bytes received on stderr: a bar when the size is known, else a count and the rate.

    On a terminal it redraws one line; elsewhere (a log, a pipe) it prints one final line.
    """

    def __init__(self, total: int | None, out: IO[str], clock: Callable[[], float]) -> None:
        self.total = total
        self.out = out
        self.clock = clock
        self.started = clock()
        self.received = 0
        self.live = out.isatty()
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self.received += n
        now = self.clock()
        if self.live and now - self._drawn >= 0.1:
            self._drawn = now
            self.out.write("\r" + self.line(now))
            self.out.flush()

    def finish(self) -> None:
        done = f"{self.line(self.clock())} ({self.received} bytes)"
        self.out.write(("\r" if self.live else "") + done + "\n")
        self.out.flush()

    def line(self, now: float) -> str:
        rate = self.received / max(now - self.started, 1e-6)
        text = f"{_size(self.received)} received, {_size(rate)}/s"
        if self.total:
            done = min(self.received / self.total, 1.0)
            bar = "#" * int(done * 30)
            return f"[{bar:<30}] {done:4.0%} {text}"
        spinner = "|/-\\"[int(now * 8) % 4] if self.live else ""
        return f"{spinner} {text}".strip()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def download(
    server: str,
    token: str,
    fmt: str,
    output: Path,
    progress_out: IO[str] | None = None,
) -> dict[str, Any]:
    """Fetch an export into ``output`` (via a ``.part`` file, so a broken transfer leaves none).

    Returns the manifest; for csv and parquet it is also written to ``<output>.manifest.json``.
    """
    import http.client
    import urllib.error
    import urllib.parse
    import urllib.request

    url = server.rstrip("/") + "/v1/export?" + urllib.parse.urlencode({"format": fmt})
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    partial = output.with_name(output.name + ".part")
    try:
        with urllib.request.urlopen(request, timeout=600) as resp:
            length = resp.headers.get("Content-Length")
            progress = Progress(
                int(length) if length and length.isdigit() else None,
                progress_out if progress_out is not None else sys.stderr,
                time.monotonic,
            )
            with partial.open("wb") as out:
                while chunk := resp.read(64 * 1024):
                    out.write(chunk)
                    progress.advance(len(chunk))
            progress.finish()
            header = resp.headers.get(MANIFEST_HEADER)
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            detail = str(orjson.loads(raw).get("detail", ""))
        except (orjson.JSONDecodeError, AttributeError):
            detail = raw.decode("utf-8", "replace")[:200]
        raise StreamTallyError(f"the server answered {err.code}: {detail}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or type(err).__name__
        raise StreamTallyError(f"the export from {server} failed: {reason}") from None
    os.replace(partial, output)
    if header is not None:
        manifest = decode_header(header)
        output.with_name(output.name + ".manifest.json").write_bytes(
            orjson.dumps({"manifest": manifest}, option=orjson.OPT_INDENT_2)
        )
        return manifest
    with output.open("rb") as f:
        first: dict[str, Any] = orjson.loads(f.readline())["manifest"]
    return first


def cmd_export(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("STREAMTALLY_API_TOKEN")
    if not token:
        raise StreamTallyError("an API token is needed: --token or STREAMTALLY_API_TOKEN")
    output = Path(args.output)
    if not output.parent.is_dir():
        raise ConfigError(
            "output",
            f"the folder {output.parent.resolve()} does not exist; create it or write elsewhere",
        )
    if output.is_dir():
        raise ConfigError("output", f"{output.resolve()} is a folder; give a file name in it")
    manifest = download(args.server, token, args.format, output)
    print(
        f"wrote {manifest.get('rows', '?')} rows of account {manifest.get('account_id')} "
        f"to {output}",
        file=sys.stderr,
    )
    return 0


def add_cli(subparsers: Any) -> None:
    """``streamtally export --server URL --token T --format ndjson --output FILE``."""
    parser = subparsers.add_parser(
        "export", help="download every aggregate of your account to a file"
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("STREAMTALLY_SERVER", "http://127.0.0.1:8080"),
        help="the StreamTally server (env STREAMTALLY_SERVER)",
    )
    parser.add_argument("--token", help="the account's API token (env STREAMTALLY_API_TOKEN)")
    parser.add_argument("--format", choices=tuple(FORMATS), default="ndjson")
    parser.add_argument("--output", required=True, help="file to write")
    parser.set_defaults(func=cmd_export)
