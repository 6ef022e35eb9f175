"""POST /v1/r/{embed_key} end to end: every admission outcome, sealed round trips, key
rotation, CORS, and the real players' captures — against a real aiohttp server and the
real ClickHouse HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from aggregator.api.auth import ACCOUNT_STORE
from collector import app as collector_app
from collector.app import KEYSTORE
from collector.cmcd import MAX_LINES
from tests.captures import CMCD_CAPTURES
from tests.integration.conftest import (
    SEALED,
    Running,
    seal_independently,
)

FIXTURES = CMCD_CAPTURES


def line(sn: int, e: str = "ps", sta: str = "p", sid: str = "s-1", ts: int | None = None) -> str:
    ts = 1795480000000 + sn * 1000 if ts is None else ts
    return f'cid="stream-42",e={e},sid="{sid}",sn={sn},sta={sta},ts={ts},v=2\n'


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def accepted_events(running: Running) -> float:
    return metric(await running.metrics(), "streamtally_events_accepted_total")


async def assert_problem(resp: Any, status: int, *needles: str) -> dict[str, Any]:
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = json.loads(await resp.text())
    assert body["status"] == status
    for needle in needles:
        assert needle in body["detail"] or needle in json.dumps(body), (needle, body)
    return body


# ---- accepted ------------------------------------------------------------------------------


async def test_plain_report_is_accepted_and_counted(running: Running) -> None:
    account = await running.create_account()
    before = await accepted_events(running)
    resp = await running.post(account["embed_key"], line(0, sta="s") + line(1, sta="p"))
    assert resp.status == 204
    assert await accepted_events(running) == before + 2


async def test_sealed_round_trip_with_an_independent_encoder(running: Running) -> None:
    account = await running.create_account()
    [config] = await running.keys()
    assert config.suites == ((0x0001, 0x0001),)
    before = await accepted_events(running)
    body = seal_independently(line(0).encode(), config)
    resp = await running.post(account["embed_key"], body, ctype=SEALED)
    assert resp.status == 204
    assert await accepted_events(running) == before + 1


@pytest.mark.settings(key_overlap_seconds=2)
async def test_rotated_key_keeps_opening_during_the_overlap_only(running: Running) -> None:
    account = await running.create_account()
    [old] = await running.keys()
    running.app[KEYSTORE].rotate()
    configs = await running.keys()
    assert next(c.key_id for c in configs) != old.key_id  # the new key is served first
    assert old.key_id in [c.key_id for c in configs]
    resp = await running.post(
        account["embed_key"], seal_independently(line(0).encode(), old), ctype=SEALED
    )
    assert resp.status == 204
    await asyncio.sleep(2.2)
    resp = await running.post(
        account["embed_key"], seal_independently(line(1).encode(), old), ctype=SEALED
    )
    await assert_problem(resp, 400, "key_id")
    assert old.key_id not in [c.key_id for c in await running.keys()]


@pytest.fixture
def fast_housekeeping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Housekeeping every 0.2 s instead of 30 s (request it before ``running``)."""
    monkeypatch.setattr(collector_app, "HOUSEKEEPING_SECONDS", 0.2)


@pytest.mark.settings(key_rotation_seconds=2, key_overlap_seconds=1)
async def test_the_service_rotates_keys_itself_and_destroys_retired_ones(
    fast_housekeeping: None, running: Running
) -> None:
    """The attack: read a retired private key from the data dir once its overlap is over."""
    account = await running.create_account()
    [old] = await running.keys()
    secret = running.app[KEYSTORE].get(old.key_id).private_key  # type: ignore[union-attr]
    raw = secret.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        configs = await running.keys()
        if old.key_id not in [c.key_id for c in configs]:
            break
        await asyncio.sleep(0.2)
    new = configs[0]
    assert new.key_id != old.key_id
    assert not (running.data_dir / "keys" / f"key-{old.key_id}.json").exists()
    for path in running.data_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert raw not in data, path
            assert base64.b64encode(raw) not in data, path
    resp = await running.post(
        account["embed_key"], seal_independently(line(0).encode(), old), ctype=SEALED
    )
    await assert_problem(resp, 400, "key_id")
    resp = await running.post(
        account["embed_key"], seal_independently(line(1).encode(), new), ctype=SEALED
    )
    assert resp.status == 204


# ---- every refusal, with its status and problem body ----------------------------------------


async def test_unknown_embed_key_is_404(running: Running) -> None:
    resp = await running.post("ek_does_not_exist", line(0))
    body = await assert_problem(resp, 404, "embed key")
    assert body["key"] == "embed_key"


async def test_origin_not_allowed_is_403(running: Running) -> None:
    account = await running.create_account()
    resp = await running.post(account["embed_key"], line(0), origin="https://evil.example")
    body = await assert_problem(resp, 403, "Origin")
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert body["key"] == "Origin"


async def test_deleted_account_is_410(running: Running) -> None:
    account = await running.create_account()
    await running.app[ACCOUNT_STORE].mark_deleted(account["account_id"])
    resp = await running.post(account["embed_key"], line(0))
    await assert_problem(resp, 410, "deleted")


async def test_too_large_is_413(running: Running) -> None:
    account = await running.create_account()
    body = line(0) * (70 * 1024 // len(line(0)))
    resp = await running.post(account["embed_key"], body)
    await assert_problem(resp, 413, "65536")


@pytest.mark.parametrize(
    "ctype", ["text/plain", "application/json", ""], ids=["text", "json", "missing"]
)
async def test_wrong_content_type_is_415(running: Running, ctype: str) -> None:
    account = await running.create_account()
    resp = await running.post(account["embed_key"], line(0), ctype=ctype)
    body = await assert_problem(resp, 415, "Content-Type")
    assert body["key"] == "Content-Type"


async def test_replayed_sealed_body_is_422(running: Running) -> None:
    account = await running.create_account()
    [config] = await running.keys()
    body = seal_independently(line(0).encode(), config)
    assert (await running.post(account["embed_key"], body, ctype=SEALED)).status == 204
    resp = await running.post(account["embed_key"], body, ctype=SEALED)
    await assert_problem(resp, 422, "received before")


@pytest.mark.settings(rate_limit_per_second=0.5, rate_limit_burst=2)
async def test_rate_limit_is_429_with_retry_after(running: Running) -> None:
    account = await running.create_account()
    statuses = [
        (await running.post(account["embed_key"], line(i), ip="192.0.2.50")).status
        for i in range(3)
    ]
    assert statuses[:2] == [204, 204]
    resp = await running.post(account["embed_key"], line(9), ip="192.0.2.50")
    await assert_problem(resp, 429, "retry")
    assert int(resp.headers["Retry-After"]) >= 1
    # another session is not affected (the limit is per session, see test_rate_limits.py)
    resp = await running.post(account["embed_key"], line(0, sid="s-2"), ip="192.0.2.51")
    assert resp.status == 204


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "",
    ],
    ids=["googlebot", "bingbot", "empty-ua"],
)
async def test_bots_are_dropped_and_counted_by_reason(running: Running, ua: str) -> None:
    account = await running.create_account()
    text_before = await running.metrics()
    resp = await running.post(account["embed_key"], line(0), ua=ua)
    assert resp.status == 204
    text_after = await running.metrics()
    dropped_before = sum(
        float(v)
        for v in re.findall(
            r'^streamtally_events_dropped_total\{reason="(?:bot_ua|empty_ua)"\} (\S+)$',
            text_before,
            re.M,
        )
    )
    dropped_after = sum(
        float(v)
        for v in re.findall(
            r'^streamtally_events_dropped_total\{reason="(?:bot_ua|empty_ua)"\} (\S+)$',
            text_after,
            re.M,
        )
    )
    assert dropped_after == dropped_before + 1
    assert metric(text_after, "streamtally_events_accepted_total") == metric(
        text_before, "streamtally_events_accepted_total"
    )


async def test_an_event_seen_before_is_accepted_and_counted_once(running: Running) -> None:
    account = await running.create_account()
    before = await accepted_events(running)
    for _ in range(3):
        assert (await running.post(account["embed_key"], line(0) + line(1))).status == 204
    assert await accepted_events(running) == before + 2


async def test_bad_line_is_reported_and_good_lines_are_kept(running: Running) -> None:
    account = await running.create_account()
    before = await accepted_events(running)
    body = line(0) + 'cid="stream-42",e=ps,sid="s-1",sn=oops,ts=1,v=2\n' + line(2)
    resp = await running.post(account["embed_key"], body)
    problem = await assert_problem(resp, 400, "line 2", "'sn'")
    assert problem["accepted"] == 2
    assert problem["errors"][0]["line"] == 2
    assert problem["errors"][0]["key"] == "sn"
    assert await accepted_events(running) == before + 2


# ---- batches: several events per report (player-snippet/src/batch.js) ----------------------


def snippet_line(sn: int, e: str = "t", sta: str = "p", sid: str = "b-1") -> str:
    """A line as the snippet's hls.js target sends it (~230 characters)."""
    ts = 1795480000000 + sn * 10_000
    return (
        f'bl=(12000),br=(1461),cid="stream-42",e={e},msd=812,pt={sn * 10_000},sf=h,'
        f'sid="{sid}-0f3c2a71-5a9e-4c55-9d1e-6b1d3f0a9e21",sn={sn},sta={sta},st=v,'
        f"ts={ts},v=2\n"
    )


async def post_batch(running: Running, embed_key: str, body: str, sealed: bool) -> Any:
    if not sealed:
        return await running.post(embed_key, body)
    [config] = await running.keys()
    return await running.post(embed_key, seal_independently(body.encode(), config), ctype=SEALED)


BATCH_FORMS = [pytest.param(False, id="plain"), pytest.param(True, id="sealed")]


@pytest.mark.parametrize("sealed", BATCH_FORMS)
@pytest.mark.parametrize(
    "events",
    [
        pytest.param(6, id="30s-at-10s-heartbeat"),  # t x3, ps s and p, bc: one flush's worth
        pytest.param(30, id="snippet-batch-size"),  # BATCH_SIZE: the most the snippet queues
        pytest.param(72, id="snippet-batch-bytes"),  # past BATCH_BYTES (16 KiB) of such lines
    ],
)
async def test_every_event_of_a_batch_is_counted(
    running: Running, sealed: bool, events: int
) -> None:
    account = await running.create_account()
    before = await accepted_events(running)
    body = "".join(snippet_line(sn) for sn in range(events))
    # under the body limit with the sealed frame's 55 bytes
    assert len(body) < running.app[collector_app.COLLECTOR_CONFIG].max_body_bytes - 64
    resp = await post_batch(running, account["embed_key"], body, sealed)
    assert resp.status == 204, await resp.text()
    assert await accepted_events(running) == before + events


@pytest.mark.parametrize("sealed", BATCH_FORMS)
async def test_a_bad_line_in_a_batch_does_not_drop_the_good_ones(
    running: Running, sealed: bool
) -> None:
    account = await running.create_account()
    before = await accepted_events(running)
    lines = [snippet_line(sn) for sn in range(10)]
    lines[3] = lines[3].replace("sn=3,", "sn=three,")
    lines[7] = "e=t,this is not a dictionary\n"
    resp = await post_batch(running, account["embed_key"], "".join(lines), sealed)
    problem = await assert_problem(resp, 400, "line 4")
    assert problem["accepted"] == 8
    assert [error["line"] for error in problem["errors"]] == [4, 8]
    assert await accepted_events(running) == before + 8


@pytest.mark.parametrize("sealed", BATCH_FORMS)
async def test_a_batch_of_max_lines_short_events_is_counted_whole(
    running: Running, sealed: bool
) -> None:
    """The per-report limits: MAX_LINES lines and max_body_bytes (the sealed frame's size
    when sealed). Short lines reach the line limit first: all of them count."""
    account = await running.create_account()
    before = await accepted_events(running)
    body = "".join(f"e=t,sn={sn},ts={sn}\n" for sn in range(MAX_LINES))
    assert len(body) < running.app[collector_app.COLLECTOR_CONFIG].max_body_bytes - 64
    resp = await post_batch(running, account["embed_key"], body, sealed)
    assert resp.status == 204, await resp.text()
    assert await accepted_events(running) == before + MAX_LINES


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00garbage", "UTF-8"),
        (b"e=ps,sta=p\n", "ts"),
        (b"\n\n", "no event"),
    ],
    ids=["empty", "not-utf8", "missing-ts", "blank-lines"],
)
async def test_malformed_bodies_are_400_naming_what_is_wrong(
    running: Running, body: bytes, needle: str
) -> None:
    account = await running.create_account()
    resp = await running.post(account["embed_key"], body)
    await assert_problem(resp, 400, needle)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"\x00\x00", "shorter"),
        (b"\x07\x00\x20\x00\x01\x00\x01" + bytes(32) + bytes(20), "key_id"),
        (b"\x00\x00\x10\x00\x01\x00\x01" + bytes(32) + bytes(20), "suite"),
    ],
    ids=["short", "unknown-key", "bad-suite"],
)
async def test_malformed_sealed_frames_are_400(running: Running, body: bytes, needle: str) -> None:
    account = await running.create_account()
    [config] = await running.keys()
    if needle == "key_id" and config.key_id == 7:
        body = b"\x08" + body[1:]
    resp = await running.post(account["embed_key"], body, ctype=SEALED)
    await assert_problem(resp, 400, needle)


async def test_tampered_sealed_body_is_400(running: Running) -> None:
    account = await running.create_account()
    [config] = await running.keys()
    body = bytearray(seal_independently(line(0).encode(), config))
    body[-1] ^= 1
    resp = await running.post(account["embed_key"], bytes(body), ctype=SEALED)
    await assert_problem(resp, 400, "cannot open")


# ---- CORS -----------------------------------------------------------------------------------


async def test_preflight_for_an_allowed_origin(running: Running) -> None:
    account = await running.create_account()
    resp = await running.http.options(
        running.url + f"/v1/r/{account['embed_key']}",
        headers={
            "Origin": "https://player.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://player.example"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"].lower() == "content-type"
    assert int(resp.headers["Access-Control-Max-Age"]) >= 600
    post = await running.post(account["embed_key"], line(0))
    assert post.headers["Access-Control-Allow-Origin"] == "https://player.example"


async def test_preflight_for_another_origin_is_refused(running: Running) -> None:
    account = await running.create_account()
    resp = await running.http.options(
        running.url + f"/v1/r/{account['embed_key']}",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers


# ---- the real players' captures --------------------------------------------------------------


def capture(name: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if x]


def distinct_events(requests: list[dict[str, Any]]) -> int:
    seen = set()
    for req in requests:
        for raw in (req.get("body") or "").splitlines():
            if raw.strip():
                seen.add(raw.strip())
    return len(seen)


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.jsonl")), ids=lambda n: n)
async def test_every_capture_is_accepted_and_each_event_counted_once(
    running: Running, name: str
) -> None:
    account = await running.create_account(origins=("*",))
    requests = [r for r in capture(name) if r["method"] == "POST"]
    before = await accepted_events(running)
    for req in requests:
        headers = {k.lower(): v for k, v in req["headers"].items()}
        resp = await running.post(
            account["embed_key"],
            req["body"],
            ctype=headers["content-type"],
            ua=headers.get("user-agent", ""),
            origin=headers.get("origin"),
        )
        assert resp.status == 204, (name, await resp.text())
    assert await accepted_events(running) == before + distinct_events(requests)


async def test_status429_capture_counts_each_event_once_even_shuffled(running: Running) -> None:
    account = await running.create_account(origins=("*",))
    requests = [r for r in capture("hlsjs-status429") if r["method"] == "POST"]
    bodies = [r["body"] for r in requests]
    assert len(bodies) > distinct_events(requests)  # the capture really holds re-sends
    before = await accepted_events(running)
    for body in reversed(bodies):
        assert (await running.post(account["embed_key"], body)).status == 204
    assert await accepted_events(running) == before + distinct_events(requests)


async def test_two_accounts_do_not_share_dedupe_state(running: Running) -> None:
    a = await running.create_account("a")
    b = await running.create_account("b")
    sid = str(uuid.uuid4())
    before = await accepted_events(running)
    assert (await running.post(a["embed_key"], line(0, sid=sid))).status == 204
    assert (await running.post(b["embed_key"], line(0, sid=sid))).status == 204
    assert await accepted_events(running) == before + 2


async def test_viewers_without_a_sid_are_separate_playbacks(running: Running) -> None:
    """Players that send no ``sid`` (CMCD makes it optional): two viewers of one stream, from
    two addresses, each start and play for 30 s. Counted as one playback they would lose a
    view, a viewer and their playing time; and the second viewer's events, numbered from
    sn 0 like the first's, would be taken for re-sent duplicates of it."""
    account = await running.create_account(k=2)
    t = int(time.time() * 1000)
    for ip in ("8.8.8.8", "193.0.0.1"):
        body = "".join(
            f'cid="stream-42",e=ps,sn={sn},sta={sta},ts={t + ms},v=2\n'
            for sn, sta, ms in ((0, "s", 0), (1, "p", 1000), (2, "e", 31_000))
        )
        assert (await running.post(account["embed_key"], body, ip=ip)).status == 204
    await running.flush()
    rows = (await running.stats(account["api_token"], granularity="day"))["rows"]
    assert [(r["views"], r["unique_viewers"], r["playing_seconds"]) for r in rows] == [(2, 2, 60.0)]
