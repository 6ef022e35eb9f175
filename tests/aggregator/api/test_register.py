"""The data register describes everything the code reads and stores (issue 5.7).

The collector's source is parsed with ``ast``: every request header, query parameter, path
parameter and request attribute it reads must be in the register, as must every CMCD key it
accepts, every field of the in-flight report and of the hand-over event, and every column of
every table the migrations create. docs/privacy.md must be the generated text.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from aggregator.api import register
from collector.cmcd import KNOWN_KEYS
from collector.handover import Event
from collector.pipeline import Report

ROOT = Path(__file__).resolve().parents[3]
CONTAINERS = {"headers": "header", "query": "query", "match_info": "path", "cookies": "cookie"}
# request attributes that are plumbing, not data from the client
PLUMBING = {"app", "method", "rel_url", "path", "match_info", "headers", "query", "cookies"}


def reads(source: str) -> set[str]:
    """``header:X``, ``query:x``, ``path:x``, ``cookie:x``, ``request:attr`` read in source."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        container: ast.expr | None = None
        name: ast.expr | None = None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "getone", "getall", "__getitem__")
            and node.args
        ):
            container, name = node.func.value, node.args[0]
        elif isinstance(node, ast.Subscript):
            container, name = node.value, node.slice
        if (
            isinstance(container, ast.Attribute)
            and container.attr in CONTAINERS
            and isinstance(name, ast.Constant)
            and isinstance(name.value, str)
        ):
            kind = CONTAINERS[container.attr]
            found.add(f"{kind}:{name.value.lower() if kind == 'header' else name.value}")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "request"
            and node.attr not in PLUMBING
        ):
            found.add(f"request:{node.attr}")
    return found


def described() -> set[str]:
    return {
        f"header:{f[7:].lower()}" if f.startswith("header:") else f
        for f in register.described_fields()
    }


def test_the_scanner_finds_every_kind_of_read() -> None:
    source = (
        "def h(request):\n"
        "    a = request.headers.get('Sec-CH-UA-Model')\n"
        "    b = request.headers['X-Real-IP']\n"
        "    c = request.query.get('utm')\n"
        "    d = request.match_info['embed_key']\n"
        "    e = request.cookies.get('id')\n"
        "    f = request.remote, request.transport, request.app\n"
    )
    assert reads(source) == {
        "header:sec-ch-ua-model",
        "header:x-real-ip",
        "query:utm",
        "path:embed_key",
        "cookie:id",
        "request:remote",
        "request:transport",
    }


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.name) for p in sorted((ROOT / "collector").glob("*.py"))]
    + [pytest.param(ROOT / "aggregator" / "api" / "auth.py", id="auth.py")],
)
def test_every_request_field_the_code_reads_is_in_the_register(path: Path) -> None:
    missing = reads(path.read_text(encoding="utf-8")) - described()
    assert not missing, f"{path.name} reads {sorted(missing)}: describe them in the register"


def test_the_collector_reads_what_the_register_says_it_reads() -> None:
    """A sanity check of the scan itself against the collector as it is."""
    found = reads((ROOT / "collector" / "app.py").read_text(encoding="utf-8"))
    assert {"header:user-agent", "header:x-forwarded-for", "request:remote"} <= found


def test_every_cmcd_key_is_in_the_register() -> None:
    fields = register.described_fields()
    assert {f"cmcd:{key}" for key in KNOWN_KEYS} <= fields
    served = register.register()["cmcd_keys"]
    assert [k["key"] for k in served] == list(KNOWN_KEYS)
    assert {k["key"] for k in served if k["identifying"]} == {"sid", "url"}


@pytest.mark.parametrize(
    ("prefix", "cls"),
    [pytest.param("report", Report, id="report"), pytest.param("event", Event, id="event")],
)
def test_every_field_of_the_report_and_the_event_is_in_the_register(prefix: str, cls: type) -> None:
    names = {f"{prefix}:{f.name}" for f in dataclasses.fields(cls)}
    assert names - register.described_fields() == set()


def test_every_column_of_every_table_is_described() -> None:
    schema = register.schema()
    assert {"accounts", "api_tokens", "cells", "audit", "purges", "schema_migrations"} <= set(
        schema
    )
    described_cols = register.described_columns()
    for table, columns in schema.items():
        assert table in described_cols, f"table {table} is not in the register"
        assert set(columns) - described_cols[table] == set(), table
        assert described_cols[table] - set(columns) == set(), f"{table}: stale descriptions"
    for table in register.register()["tables"]:
        assert not [c for c, d in table["columns"].items() if "(not described)" in d]


def test_parse_columns_handles_nested_types() -> None:
    sql = (
        "CREATE TABLE IF NOT EXISTS t\n(\n    a Map(String, UInt32),\n"
        "    b DateTime64(3, 'UTC'),\n    c LowCardinality(String)\n)\nENGINE = MergeTree\n"
        "ORDER BY a"
    )
    assert register.parse_columns(sql) == (
        "t",
        {"a": "Map(String, UInt32)", "b": "DateTime64(3, 'UTC')", "c": "LowCardinality(String)"},
    )


@pytest.mark.parametrize(
    ("sql", "parsed"),
    [
        pytest.param(
            "ALTER TABLE accounts ADD COLUMN IF NOT EXISTS streams Array(String) AFTER origins",
            ("accounts", {"streams": "Array(String)"}),
            id="add-column-after",
        ),
        pytest.param(
            "ALTER TABLE t ADD COLUMN `c` Map(String, UInt32)",
            ("t", {"c": "Map(String, UInt32)"}),
            id="add-column-quoted",
        ),
        pytest.param("ALTER TABLE t DROP COLUMN c", None, id="not-an-addition"),
    ],
)
def test_parse_columns_reads_added_columns(
    sql: str, parsed: tuple[str, dict[str, str]] | None
) -> None:
    assert register.parse_columns(sql) == parsed


def test_every_category_says_where_how_long_and_why() -> None:
    for category in register.register()["categories"]:
        for key in ("where", "retention", "purpose", "stored"):
            assert category[key].strip(), (category["name"], key)
    names = {c["name"] for c in register.register()["categories"]}
    for needed in ("IP address", "User agent", "Client hints", "Referer", "Session id (sid)"):
        assert needed in names


def test_docs_privacy_md_is_the_generated_register() -> None:
    doc = ROOT / "docs" / "privacy.md"
    assert doc.exists(), "run: python -m aggregator.api.register > docs/privacy.md"
    text = doc.read_text(encoding="utf-8")
    assert text == register.update(text), (
        "docs/privacy.md is stale: python -m aggregator.api.register --update docs/privacy.md"
    )
