"""Viewers behind one address: the rate limit is per playback session, with a separate, much
higher cap per address. Two hundred viewers of one office or stadium NAT, same browser, are
all counted; one session that floods is refused without its neighbours; a flood of sessions
from one address meets the address cap. Neither limit shows an address or a session."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.integration.conftest import SEALED, Running, seal_independently
from tests.integration.test_reports import assert_problem, metric

NAT = "203.0.113.77"


def line(sid: str, sn: int) -> str:
    ts = 1795480000000 + sn * 1000
    return f'cid="stream-42",e=ps,sid="{sid}",sn={sn},sta=p,ts={ts},v=2\n'


async def post_all(running: Running, embed_key: str, bodies: list[str]) -> list[int]:
    gate = asyncio.Semaphore(16)

    async def one(body: str) -> int:
        async with gate:
            return (await running.post(embed_key, body, ip=NAT)).status

    return list(await asyncio.gather(*(one(b) for b in bodies)))


async def test_two_hundred_viewers_behind_one_address_are_all_counted(running: Running) -> None:
    account = await running.create_account()
    sids = [f"viewer-{n:03d}" for n in range(200)]
    bodies = [line(sid, sn) for sn in range(3) for sid in sids]  # 600 reports in a burst
    statuses = await post_all(running, account["embed_key"], bodies)
    assert statuses.count(204) == 600, {s: statuses.count(s) for s in set(statuses)}


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
@pytest.mark.settings(rate_limit_per_second=0.5, rate_limit_burst=2)
async def test_a_flooding_session_is_refused_and_its_neighbours_are_not(
    running: Running, sealed: bool
) -> None:
    account = await running.create_account()
    config = (await running.keys())[0] if sealed else None

    async def send(sid: str, sn: int) -> Any:
        body: str | bytes = line(sid, sn)
        if config is not None:
            body = seal_independently(body.encode(), config)
        return await running.post(
            account["embed_key"], body, ip=NAT, ctype=SEALED if sealed else "application/cmcd"
        )

    assert [(await send("flood", sn)).status for sn in range(2)] == [204, 204]
    refused = await send("flood", 2)
    problem = await assert_problem(refused, 429, "session")
    assert int(refused.headers["Retry-After"]) >= 1
    assert "flood" not in json.dumps(problem)
    assert NAT not in json.dumps(problem)
    # Same address, same browser, another session: counted.
    assert (await send("neighbour", 0)).status == 204


@pytest.mark.settings(address_rate_limit_per_second=0.5, address_rate_limit_burst=3)
async def test_a_flood_of_sessions_from_one_address_meets_the_address_cap(
    running: Running,
) -> None:
    account = await running.create_account()
    rejected = 'reason="rate_limited"'
    before = metric(await running.metrics(), "streamtally_reports_rejected_total", rejected)
    statuses = [
        (await running.post(account["embed_key"], line(f"s{n}", 0), ip=NAT)).status
        for n in range(3)
    ]
    assert statuses == [204, 204, 204]
    refused = await running.post(account["embed_key"], line("s9", 0), ip=NAT)
    problem = await assert_problem(refused, 429, "address")
    assert NAT not in json.dumps(problem)
    assert (
        await running.post(account["embed_key"], line("s9", 0), ip="203.0.113.78")
    ).status == 204
    text = await running.metrics()
    assert metric(text, "streamtally_reports_rejected_total", rejected) == before + 1
    assert NAT not in text
    assert "s9" not in text


def test_both_limits_are_documented() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    for flag in ("--rate-limit-per-second", "--address-rate-limit-per-second"):
        assert flag in readme, flag
    assert "per session" in (root / "docs" / "design.md").read_text()
