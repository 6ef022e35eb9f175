"""GET /v1/export (ndjson, csv, parquet, manifest) and ``streamtally export`` against the real
ClickHouse HTTP server."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from aggregator.api import audit, export
from aggregator.service import SERVICE
from collector.errors import StorageError, StreamTallyError
from tests.integration.conftest import Running
from tests.integration.test_stats_api import DAY, HOUR, cell, get, iso, put_cells

SCHEMA = list(export.COLUMNS)


async def two_accounts(running: Running) -> tuple[dict[str, Any], dict[str, Any]]:
    """Account A with three cells (two parts, one deleted cell); account B with its own."""
    acc_a = await running.create_account("a", k=3)
    acc_b = await running.create_account("b")
    a, b = acc_a["account_id"], acc_b["account_id"]
    await put_cells(
        running,
        [
            cell(a, HOUR, views=5, unique_viewers=4, failures_by_code={"E1": 2}),
            cell(a, HOUR, breakdown="country", value="DE", views=4, unique_viewers=3),
            cell(a, DAY, granularity="day", views=5, unique_viewers=4),
            cell(a, HOUR, stream="gone", views=1, unique_viewers=3),
        ],
        part="run-1",
    )
    await put_cells(
        running,
        [cell(a, HOUR, views=2, unique_viewers=3, failures_by_code={"E1": 1, "E7": 1})],
        part="run-2",
    )
    await put_cells(running, [cell(a, HOUR, stream="gone")], part="run-1", version=2, deleted=1)
    await put_cells(running, [cell(b, HOUR, stream="b-secret-stream", views=9, unique_viewers=9)])
    return acc_a, acc_b


def check_manifest(manifest: dict[str, Any], account: dict[str, Any], fmt: str, rows: int) -> None:
    assert manifest["account_id"] == account["account_id"]
    assert manifest["format"] == fmt
    assert manifest["k"] == 3
    assert manifest["retention_days"] == account["retention_days"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["exported_at"])
    assert [c["name"] for c in manifest["schema"]] == SCHEMA
    types = {c["name"]: c["type"] for c in manifest["schema"]}
    assert types["views"] == "UInt64"
    assert types["window_start"] == "DateTime('UTC')"
    assert types["failures_by_code"].startswith("Map(String")
    assert all(c["description"] for c in manifest["schema"])
    assert manifest["rows"] == rows


async def test_ndjson_starts_with_the_manifest_and_holds_every_cell(running: Running) -> None:
    acc_a, _ = await two_accounts(running)
    status, headers, raw = await get(running, "/v1/export", acc_a["api_token"], format="ndjson")
    assert status == 200
    assert headers["Content-Type"].startswith("application/x-ndjson")
    disposition = headers["Content-Disposition"]
    assert disposition.startswith("attachment; filename=")
    assert f"streamtally-{acc_a['account_id']}-" in disposition
    assert disposition.endswith('.ndjson"')
    lines = raw.decode().splitlines()
    manifest = json.loads(lines[0])["manifest"]
    rows = [json.loads(line) for line in lines[1:]]
    check_manifest(manifest, acc_a, "ndjson", rows=3)
    assert [list(r) for r in rows] == [SCHEMA] * 3
    by_key = {(r["granularity"], r["breakdown"], r["value"]): r for r in rows}
    total = by_key[("hour", "", "")]
    assert total["views"] == 7  # the two parts added up, as a JSON number
    assert total["unique_viewers"] == 7
    assert total["failures_by_code"] == {"E1": 3, "E7": 1}
    assert total["window_start"] == iso(HOUR)
    assert len(total["startup_hist"]) == 40
    assert total["retention_days"] == 762
    assert by_key[("hour", "country", "DE")]["views"] == 4
    assert by_key[("day", "", "")]["views"] == 5
    assert "gone" not in raw.decode()  # a deleted cell is not exported


async def test_csv_carries_the_manifest_in_a_header(running: Running) -> None:
    acc_a, _ = await two_accounts(running)
    status, headers, raw = await get(running, "/v1/export", acc_a["api_token"], format="csv")
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert headers["Content-Disposition"].endswith('.csv"')
    table = list(csv.reader(io.StringIO(raw.decode())))
    assert table[0] == SCHEMA
    assert len(table) == 4
    manifest = export.decode_header(headers[export.MANIFEST_HEADER])
    check_manifest(manifest, acc_a, "csv", rows=3)


async def test_parquet_is_readable_with_the_schema(running: Running) -> None:
    acc_a, _ = await two_accounts(running)
    status, headers, raw = await get(running, "/v1/export", acc_a["api_token"], format="parquet")
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(raw))
    assert table.column_names == SCHEMA
    assert table.num_rows == 3
    assert sorted(table.column("views").to_pylist()) == [4, 5, 7]
    check_manifest(export.decode_header(headers[export.MANIFEST_HEADER]), acc_a, "parquet", 3)


async def test_format_manifest_answers_the_manifest_alone(running: Running) -> None:
    acc_a, _ = await two_accounts(running)
    status, headers, raw = await get(running, "/v1/export", acc_a["api_token"], format="manifest")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    check_manifest(json.loads(raw)["manifest"], acc_a, "manifest", rows=3)


async def test_an_account_without_data_exports_only_the_manifest(running: Running) -> None:
    acc = await running.create_account(k=3)
    status, _, raw = await get(running, "/v1/export", acc["api_token"])
    assert status == 200
    lines = raw.decode().splitlines()
    assert len(lines) == 1
    check_manifest(json.loads(lines[0])["manifest"], acc, "ndjson", rows=0)


async def test_export_never_holds_another_accounts_rows(running: Running) -> None:
    acc_a, acc_b = await two_accounts(running)
    for fmt in ("ndjson", "csv", "parquet"):
        status, _, raw = await get(running, "/v1/export", acc_a["api_token"], format=fmt)
        assert status == 200
        assert b"b-secret-stream" not in raw
        assert acc_b["account_id"].encode() not in raw
    status, _, raw = await get(running, "/v1/export", acc_b["api_token"])
    assert b"b-secret-stream" in raw
    assert b"live-1" not in raw


@pytest.mark.parametrize(
    ("token", "params", "status"),
    [
        pytest.param(None, {}, 401, id="no-token"),
        pytest.param("st_wrong-token-0000000000000000", {}, 401, id="invalid-token"),
        pytest.param("test-admin-token-0123456789", {}, 401, id="admin-token"),
        pytest.param("valid", {"format": "xlsx"}, 400, id="bad-format"),
    ],
)
async def test_export_errors(
    running: Running, token: str | None, params: dict[str, str], status: int
) -> None:
    acc = await running.create_account()
    if token == "valid":
        token = acc["api_token"]
    got, headers, raw = await get(running, "/v1/export", token, **params)
    assert got == status
    assert headers["Content-Type"].startswith("application/problem+json")
    if status == 400:
        assert json.loads(raw)["key"] == "format"


async def test_export_is_audited(running: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []

    async def record(request: Any, account_id: str, action: str, summary: dict[str, Any]) -> None:
        calls.append((account_id, action, summary))

    acc = await running.create_account()
    monkeypatch.setattr(audit, "record", record)
    status, _, _ = await get(running, "/v1/export", acc["api_token"], format="csv")
    assert status == 200
    assert calls == [(acc["account_id"], "export", {"format": "csv"})]


async def test_a_failure_part_way_breaks_the_transfer(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    acc = await running.create_account()
    store = running.app[SERVICE].store

    async def failing(sql: str, fmt: str, parameters: Any = None) -> AsyncIterator[bytes]:
        yield b'{"stream":"x"}\n'
        raise StorageError("ClickHouse went away")

    monkeypatch.setattr(store, "raw_stream", failing)
    headers = {"Authorization": f"Bearer {acc['api_token']}"}
    async with running.http.get(running.url + "/v1/export", headers=headers) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


# ---- streamtally export ----------------------------------------------------------------------


def cli_args(running: Running, token: str, fmt: str, output: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    export.add_cli(parser.add_subparsers(dest="command"))
    return parser.parse_args(
        ["export", "--server", running.url, "--token", token, "--format", fmt,
         "--output", str(output)]
    )  # fmt: skip


@pytest.mark.parametrize("fmt", ["ndjson", "csv", "parquet"])
async def test_cli_writes_the_export_to_a_file(running: Running, tmp_path: Path, fmt: str) -> None:
    acc_a, _ = await two_accounts(running)
    output = tmp_path / f"out.{fmt}"
    args = cli_args(running, acc_a["api_token"], fmt, output)
    assert await asyncio.to_thread(args.func, args) == 0
    data = output.read_bytes()
    if fmt == "ndjson":
        lines = data.decode().splitlines()
        check_manifest(json.loads(lines[0])["manifest"], acc_a, fmt, rows=3)
        assert len(lines) == 4
    else:
        manifest = json.loads((tmp_path / f"out.{fmt}.manifest.json").read_bytes())["manifest"]
        check_manifest(manifest, acc_a, fmt, rows=3)
        if fmt == "csv":
            assert len(data.decode().splitlines()) == 4
        else:
            assert pq.read_table(io.BytesIO(data)).num_rows == 3
    assert not (tmp_path / f"out.{fmt}.part").exists()


async def test_cli_progress_reports_the_bytes_received(running: Running, tmp_path: Path) -> None:
    acc_a, _ = await two_accounts(running)
    progress = io.StringIO()
    output = tmp_path / "out.ndjson"
    manifest = await asyncio.to_thread(
        export.download, running.url, acc_a["api_token"], "ndjson", output, progress
    )
    assert manifest["rows"] == 3
    size = output.stat().st_size
    assert progress.getvalue().endswith("\n")
    assert "received, " in progress.getvalue()
    assert f"({size} bytes)" in progress.getvalue()


def test_progress_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    ticks = iter([0.0, 0.5, 1.0, 2.0])
    bar = export.Progress(total=4096, out=out, clock=lambda: next(ticks))
    bar.advance(1024)
    bar.advance(1024)
    bar.finish()
    text = out.getvalue()
    assert text.startswith("\r[")
    assert "[###############               ]  50% 2.0 KiB received" in text
    assert text.endswith("\n")


async def test_cli_with_a_wrong_token_fails_and_leaves_no_file(
    running: Running, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "out.ndjson"
    args = cli_args(running, "st_wrong-token-0000000000000000", "ndjson", output)
    with pytest.raises(StreamTallyError, match="401"):
        await asyncio.to_thread(args.func, args)
    assert list(output.parent.iterdir()) == []


async def test_cli_on_a_broken_transfer_leaves_no_file(
    running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acc = await running.create_account()
    store = running.app[SERVICE].store

    async def failing(sql: str, fmt: str, parameters: Any = None) -> AsyncIterator[bytes]:
        yield b"x" * 1000
        raise StorageError("ClickHouse went away")

    monkeypatch.setattr(store, "raw_stream", failing)
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "out.ndjson"
    with pytest.raises(StreamTallyError, match="failed"):
        await asyncio.to_thread(
            export.download, running.url, acc["api_token"], "ndjson", output, io.StringIO()
        )
    assert list(output.parent.iterdir()) == []
