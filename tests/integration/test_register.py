"""GET /v1/register: the data register, public, with the running service's settings."""

from __future__ import annotations

import pytest

from aggregator.api import register
from aggregator.service import SERVICE
from collector.app import COLLECTOR_CONFIG
from collector.cmcd import KNOWN_KEYS
from tests.integration.conftest import Running


@pytest.mark.settings(default_k=7, retention_days=90, session_idle_seconds=600)
async def test_register_is_public_and_shows_the_running_settings(running: Running) -> None:
    resp = await running.http.get(running.url + "/v1/register")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    body = await resp.json()
    assert body["k"] == {"default": 7, "minimum": 2}
    assert body["retention_days"]["aggregates_default"] == 90
    [session] = [c for c in body["categories"] if c["name"] == "Session id (sid)"]
    assert "10 minutes" in session["retention"]
    assert [k["key"] for k in body["cmcd_keys"]] == list(KNOWN_KEYS)
    assert {t["name"] for t in body["tables"]} >= {"cells", "audit", "accounts", "purges"}
    assert (
        body["categories"]
        == register.register(running.app[COLLECTOR_CONFIG], running.app[SERVICE].config)[
            "categories"
        ]
    )


async def test_register_ignores_a_token_and_refuses_other_methods(running: Running) -> None:
    resp = await running.http.get(
        running.url + "/v1/register", headers={"Authorization": "Bearer nonsense"}
    )
    assert resp.status == 200
    resp = await running.http.post(running.url + "/v1/register", data=b"{}")
    assert resp.status == 405
