"""/v1/openapi.json: it matches the app's routes, it is valid OpenAPI 3.1, and schemathesis,
sending valid and invalid inputs to every operation it describes, gets no 5xx from a real
``streamtally serve`` against the real ClickHouse HTTP server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aggregator.api.openapi import document
from tests.conftest import ChDatabase
from tests.integration.conftest import ADMIN_TOKEN, CHROME_UA, ORIGIN, Running
from tests.integration.serveproc import ServeProcess

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route; HEAD, which aiohttp adds to GETs, left out."""
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        resource = route.resource
        assert resource is not None
        path = resource.canonical
        if isinstance(resource, web.StaticResource):
            path = path.rstrip("/") + "/{path}"
        found.add((route.method, path))
    return found


def document_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


async def test_the_document_lists_exactly_the_apps_routes(running: Running) -> None:
    async with running.http.get(running.url + "/v1/openapi.json") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        served = await resp.json()
    in_app = app_routes(running.app)
    in_doc = document_routes(served)
    assert in_doc - in_app == set(), "documented but not served"
    assert in_app - in_doc == set(), "served but not documented"


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)
    operation_ids = [
        op["operationId"]
        for item in doc["paths"].values()
        for method, op in item.items()
        if method in HTTP_METHODS
    ]
    assert len(operation_ids) == len(set(operation_ids))


def test_every_customer_and_admin_route_requires_its_token() -> None:
    for path, item in document()["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            security = op.get("security")
            if path.startswith("/v1/admin/"):
                assert security == [{"adminToken": []}], (method, path)
            elif path in ("/v1/stats", "/v1/streams", "/v1/realtime", "/v1/export", "/v1/audit",
                          "/v1/account"):  # fmt: skip
                assert security == [{"apiToken": []}], (method, path)
                assert "401" in op["responses"], (method, path)


# ---- schemathesis ----------------------------------------------------------------------------

# Deleting the account whose token the run uses would leave the rest of the run at 401s; the
# purge itself is tested in tests/integration/test_account_deletion.py.
EXCLUDED = {("DELETE", "/v1/account")}
MAX_EXAMPLES = 25
# Valid input: no 5xx, and the answer is what the document says (status, type, body schema).
# Invalid input: no 5xx.
CHECKS = {
    GenerationMode.POSITIVE: [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ],
    GenerationMode.NEGATIVE: [not_a_server_error],
}


def _call(
    method: str, url: str, token: str | None = None, body: bytes | None = None, **headers: str
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture
def server(
    tmp_path: Path, ch_database: ChDatabase
) -> Iterator[tuple[ServeProcess, dict[str, Any]]]:
    """A real ``streamtally serve`` with one account that has a few written cells."""
    serve = ServeProcess(
        tmp_path / "data",
        "--clickhouse-url", ch_database.url, "--database", ch_database.database,
        "--admin-token", ADMIN_TOKEN, "--trusted-proxies", "127.0.0.1/32",
        "--flush-seconds", "3600",
    )  # fmt: skip
    serve.start()
    try:
        status, raw = _call(
            "POST",
            serve.url + "/v1/admin/accounts",
            ADMIN_TOKEN,
            json.dumps({"name": "fuzz", "origins": [ORIGIN], "k": 2}).encode(),
            **{"Content-Type": "application/json"},
        )
        assert status == 201, raw
        account: dict[str, Any] = json.loads(raw)
        ts = int(time.time() * 1000)
        for i in range(3):
            body = (
                f'cid="fuzz",e=ps,sid="s{i}",sn=0,sta=s,ts={ts},v=2\n'
                f'cid="fuzz",e=ps,sid="s{i}",sn=1,sta=p,ts={ts + 500},v=2\n'
            )
            status, _ = _call(
                "POST",
                f"{serve.url}/v1/r/{account['embed_key']}?player=hls.js",
                body=body.encode(),
                **{"Content-Type": "application/cmcd", "User-Agent": CHROME_UA,
                   "X-Forwarded-For": f"198.51.100.{i + 1}", "Origin": ORIGIN},
            )  # fmt: skip
            assert status == 204
        assert _call("POST", serve.url + "/v1/admin/flush", ADMIN_TOKEN)[0] == 200
        yield serve, account
    finally:
        serve.stop()


@schemathesis.serializer("application/cmcd", "application/vnd.streamtally.sealed")
def _raw_body(ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else str(value).encode()


def fuzz(strategy: Any, base_url: str, token: str, checks: list[Any]) -> int:
    """Send up to MAX_EXAMPLES generated cases; raise when a check fails. Returns how many."""
    sent = 0

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        nonlocal sent
        sent += 1
        response = case.call(base_url=base_url, headers={"Authorization": f"Bearer {token}"})
        case.validate_response(response, checks=checks)

    run()
    return sent


@pytest.mark.timeout(120)
def test_schemathesis_finds_no_server_error_and_answers_match_the_document(
    server: tuple[ServeProcess, dict[str, Any]],
) -> None:
    serve, account = server
    schema = schemathesis.openapi.from_url(serve.url + "/v1/openapi.json")
    failures: list[str] = []
    calls = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key in EXCLUDED:
            continue
        token = ADMIN_TOKEN if operation.path.startswith("/v1/admin/") else account["api_token"]
        path_sets: list[dict[str, Any] | None] = [None]
        if operation.path == "/v1/r/{embed_key}":
            path_sets.append({"embed_key": account["embed_key"]})  # reach the parser too
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for fixed in path_sets:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
                try:
                    calls += fuzz(strategy, serve.url, token, CHECKS[mode])
                except Unsatisfiable:
                    # No parameter or body that can be made invalid (e.g. GET /healthz).
                    assert mode is GenerationMode.NEGATIVE, key
                except (Exception, FailureGroup) as exc:
                    failures.append(f"{key} {mode.value}: {str(exc)[:2000]}")
    elapsed = time.monotonic() - started
    assert serve.alive()
    assert failures == [], "\n\n".join(failures)
    assert [line for line in serve.output if "unexpected" in line] == []
    assert calls > 300  # every operation really was exercised
    assert elapsed < 60
