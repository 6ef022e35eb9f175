"""A token of account A never reaches anything of account B (issue 5.5).

The routes are taken from the running app's router, so a route added later is covered too:
every customer route is called with A's token and B's identifiers in the query, and must not
answer anything of B; every admin route is called with A's token and B's ids in the path, and
must answer 401. Last, DELETE /v1/account with A's token deletes A and only A.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.integration.conftest import Running
from tests.integration.test_purge import feed

PUBLIC = ("/v1/r/", "/v1/keys", "/healthz", "/v1/register", "/v1/openapi.json", "/")


def routes_of(running: Running) -> list[tuple[str, str]]:
    """(method, path template) of every route but HEAD/OPTIONS."""
    found = []
    for route in running.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        if route.method in ("HEAD", "OPTIONS", "*") or path is None:
            continue
        found.append((route.method, path))
    return sorted(set(found))


def is_public(path: str) -> bool:
    return (
        path == "/"
        or path.startswith("/static")
        or any(path == p or (p.endswith("/") and p != "/" and path.startswith(p)) for p in PUBLIC)
    )


async def call(
    running: Running, method: str, path: str, token: str, params: dict[str, str] | None = None
) -> tuple[int, bytes]:
    resp = await running.http.request(
        method,
        running.url + path,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        json={} if method in ("POST", "PUT", "PATCH") else None,
    )
    return resp.status, await resp.read()


async def test_a_token_of_account_a_gets_nothing_of_account_b(running: Running) -> None:
    a = await running.create_account("Alpha Media")
    b = await running.create_account("Bravo Media")
    await feed(running, a, "alpha-stream")
    await feed(running, b, "bravo-stream")
    await running.flush()
    [b_token] = (
        await (await running.admin("GET", f"/v1/admin/accounts/{b['account_id']}/tokens")).json()
    )["tokens"]
    secrets_of_b: list[bytes] = [
        s.encode() for s in (b["account_id"], b["embed_key"], b["api_token"], "bravo-stream")
    ] + [b["api_token"][:8].encode(), b"Bravo Media"]
    path_ids = {"account_id": b["account_id"], "token_id": b_token["token_id"]}

    customer: list[tuple[str, str]] = []
    admin: list[tuple[str, str]] = []
    for method, template in routes_of(running):
        if is_public(template):
            continue
        path = re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: path_ids.get(m.group(1), "x"), template)
        (admin if template.startswith("/v1/admin/") else customer).append((method, path))
    assert ("GET", "/v1/stats") in customer
    assert ("DELETE", f"/v1/admin/accounts/{b['account_id']}") in admin

    def leaks(body: bytes, secrets: list[bytes]) -> list[bytes]:
        return [s for s in secrets if s in body]

    for method, path in customer:  # first nothing but A's token
        if (method, path) != ("DELETE", "/v1/account"):
            status, body = await call(running, method, path, a["api_token"])
            assert status < 500, (method, path, body[:300])
            assert not leaks(body, secrets_of_b), (method, path)
    # Then with B's account id and stream in the query. A may see its own request echoed (its
    # audit log records what it asked), so only what A never sent must not appear ...
    foreign = {"account_id": b["account_id"], "account": b["account_id"], "stream": "bravo-stream"}
    never_sent = secrets_of_b[1:3] + secrets_of_b[4:]
    for method, path in customer:
        if (method, path) == ("DELETE", "/v1/account"):
            continue  # last, below
        for params in (foreign, {**foreign, "format": "csv"}, {**foreign, "format": "ndjson"}):
            status, body = await call(running, method, path, a["api_token"], params)
            assert status < 500, (method, path, params, body[:300])
            assert not leaks(body, never_sent), (method, path, params)
    # ... and the data routes answer none of B's rows.
    stats = await running.stats(a["api_token"], granularity="hour", stream="bravo-stream")
    assert stats["rows"] == []
    status, body = await call(running, "GET", "/v1/export", a["api_token"], foreign)
    assert status == 200
    assert not leaks(body, secrets_of_b)
    for method, path in admin:
        status, _ = await call(running, method, path, a["api_token"])
        assert status == 401, (method, path)

    # B is untouched by all of that:
    tokens = await (
        await running.admin("GET", f"/v1/admin/accounts/{b['account_id']}/tokens")
    ).json()
    assert tokens["tokens"] == [b_token]
    assert (await running.stats(b["api_token"], granularity="hour"))["rows"]

    # Last: A deletes its own account, and only its own.
    status, body = await call(running, "DELETE", "/v1/account", a["api_token"], foreign)
    assert status == 200
    receipt: dict[str, Any] = json.loads(body)
    assert receipt["account_id"] == a["account_id"]
    assert (await running.post(a["embed_key"], "x")).status == 410
    assert (await running.post(b["embed_key"], "x")).status != 410
    stats = await running.stats(b["api_token"], granularity="hour")
    assert {row["stream"] for row in stats["rows"]} == {"bravo-stream"}
    status, _ = await call(running, "GET", "/v1/stats", a["api_token"])
    assert status == 401
