"""An attacker types identifiers into every free-text place a report has; none is kept.

Values shaped like an e-mail address, an IP address (v4, v6), a URL with a query, a UUID
and a long digit run go into every CMCD key a report can carry (strings, tokens, custom
keys) and every query parameter of the report URL, from enough viewers that every cell
passes k. After a flush, none of them is in any column of any table of the database, any
file of the service's or the ClickHouse server's data dir, any log record, /metrics or any
answer of the read API. Declared stream names and known error codes are kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import quote

import clickhouse_connect
import pytest

from aggregator.cli import build_parser
from aggregator.config import BREAKDOWN_DIMENSIONS
from tests.chserver import ClickHouseProcess
from tests.integration.conftest import ADMIN_TOKEN, ORIGIN, Running

T = 1795480000000
VIEWER_IPS = ("198.51.100.21", "198.51.100.22", "198.51.100.23")

# (readable id, value as a CMCD string, bytes that must appear nowhere)
NEEDLES = {
    "email": ("qz.victim@example.com", (b"qz.victim@example.com", b"qz.victim")),
    "ipv4": ("203.0.113.199", (b"203.0.113.199",)),
    "ipv6": ("2001:db8:7a7a::4321", (b"2001:db8:7a7a::4321", b"7a7a")),
    "url-with-query": ("https://cdn.example/v.m3u8?token=qzsecret42", (b"qzsecret42",)),
    "uuid": ("9f3c2a7e-1b4d-4e8f-a0c2-7d5e6f8a9b0c", (b"9f3c2a7e-1b4d", b"7d5e6f8a9b0c")),
    "digits": ("4915112345678", (b"4915112345678",)),
}
# The same kinds of value as structured-field tokens (letter first; no "@", "?" or spaces).
TOKEN_NEEDLES = {
    "uuid": ("f93c2a7e-1b4d-4e8f-a0c2-7d5e6f8a9b0d", (b"f93c2a7e",)),
    "ipv6": ("fd00:7b7b::4321", (b"fd00:7b7b",)),
    "digits": ("x4915112345679", (b"4915112345679",)),
}
ALL_BYTES = tuple(b for _, found in (*NEEDLES.values(), *TOKEN_NEEDLES.values()) for b in found)


def lines_for(value: str, viewer: int) -> str:
    """One viewer's session with ``value`` in every string key, failing with it as code."""
    sid = f"{value}-{viewer}"
    common = f'cid="{value}",sid="{sid}",v=2'
    return "".join(
        [
            f"{common},e=ps,sn=0,sta=s,ts={T}\n",
            f"{common},e=ps,sn=1,sta=p,br=(3000),ts={T + 1000}\n",
            f'{common},e=rr,sn=2,rc=200,ttfb=10,ttlb=20,url="{value}",ts={T + 1500}\n',
            f'{common},e=ce,sn=3,com.example-who="{value}",ts={T + 1600}\n',
            f"{common},e=ps,sn=4,sta=f,ts={T + 2000}\n",
            f'{common},e=e,sn=5,sta=f,ec=("{value}" "{value}"),ts={T + 2001}\n',
        ]
    )


def token_lines_for(token: str, viewer: int) -> str:
    """``token`` in every token key (e, sta, sf, st, ot) of a session."""
    common = f'cid="tokens-{viewer % 2}",sid="tok-{token}-{viewer}",v=2'
    return "".join(
        [
            f"{common},e=ps,sn=0,sta=s,ts={T}\n",
            f"{common},e={token},sn=1,sta={token},sf={token},st={token},ts={T + 10}\n",
            f"{common},e=rr,sn=2,ot={token},rc=200,ts={T + 20}\n",
            f"{common},e=ps,sn=3,sta=f,ts={T + 30}\n",
            f'{common},e=e,sn=4,sta=f,ec="{token}",ts={T + 31}\n',
        ]
    )


async def get_json(running: Running, path: str, token: str, **params: str) -> Any:
    resp = await running.http.get(
        running.url + path, params=params, headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200, await resp.text()
    return await resp.read()


async def every_answer(running: Running, token: str) -> list[bytes]:
    answers = []
    for granularity in ("minute", "hour", "day"):
        answers.append(await get_json(running, "/v1/stats", token, granularity=granularity))
        for by in BREAKDOWN_DIMENSIONS:
            answers.append(
                await get_json(running, "/v1/stats", token, granularity=granularity, by=by)
            )
    answers.append(
        await get_json(running, "/v1/stats", token, granularity="day", metrics="failures_by_code")
    )
    answers.append(await get_json(running, "/v1/streams", token))
    answers.append(await get_json(running, "/v1/realtime", token))
    answers.append(await get_json(running, "/v1/export", token, format="ndjson"))
    return answers


def every_table(running: Running) -> bytes:
    host, port = running.ch.url.removeprefix("http://").rsplit(":", 1)
    client = clickhouse_connect.get_client(host=host, port=int(port), database=running.ch.database)
    try:
        tables = [r[0] for r in client.query("SHOW TABLES").result_rows]
        assert {"cells", "accounts", "audit"} <= set(tables)
        return b"".join(client.raw_query(f"SELECT * FROM `{t}` FORMAT TSV") for t in tables)
    finally:
        client.close()


def files_holding(folder: Any, needles: tuple[bytes, ...]) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits.extend(f"{path}: {n!r}" for n in needles if n in data)
    return hits


async def test_identifiers_typed_into_reports_are_kept_nowhere(
    running: Running,
    clickhouse_server: ClickHouseProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    account = await running.create_account(origins=(ORIGIN,), k=2)
    key = account["embed_key"]
    for name, (value, _) in NEEDLES.items():
        for viewer, ip in enumerate(VIEWER_IPS):
            # the value also in ?player= and in a query parameter nobody reads
            player = f"{quote(value, safe='')}&utm_source={quote(value, safe='')}"
            resp = await running.post(key, lines_for(value, viewer), ip=ip, player=player)
            assert resp.status == 204, (name, await resp.text())
    for name, (token, _) in TOKEN_NEEDLES.items():
        for viewer, ip in enumerate(VIEWER_IPS):
            resp = await running.post(key, token_lines_for(token, viewer), ip=ip)
            assert resp.status == 204, (name, await resp.text())
    for name, (value, _) in NEEDLES.items():  # typed where the embed key goes
        resp = await running.post(quote(value, safe=""), lines_for(value, 0))
        assert resp.status == 404, (name, await resp.text())
    await running.flush()

    answers = await every_answer(running, account["api_token"])
    streams = await get_json(running, "/v1/streams", account["api_token"])
    assert b"(redacted)" in streams, streams  # the sessions were counted, under a placeholder
    assert b"(other)" in answers[-1]  # their codes too

    found = [
        (where, needle)
        for where, blob in (
            ("api", b"\n".join(answers)),
            ("clickhouse", every_table(running)),
            ("logs", caplog.text.encode()),
            ("metrics", (await running.metrics()).encode()),
        )
        for needle in ALL_BYTES
        if needle in blob
    ]
    assert found == []
    assert files_holding(running.data_dir, ALL_BYTES) == []
    assert files_holding(clickhouse_server.data_dir, ALL_BYTES) == []

    metrics = await running.metrics()
    for reason in ("email", "ip", "url", "uuid", "digits"):
        assert f'streamtally_values_screened_total{{field="stream",reason="{reason}"}}' in metrics


async def test_declared_streams_and_known_codes_are_kept(running: Running) -> None:
    resp = await running.admin(
        "POST",
        "/v1/admin/accounts",
        {
            "name": "league",
            "origins": [ORIGIN],
            "k": 2,
            "streams": ["final-4915112345678"],
            "stream_patterns": ["match-*"],
        },
    )
    assert resp.status == 201, await resp.text()
    account = await resp.json()
    assert account["streams"] == ["final-4915112345678"]
    assert account["stream_patterns"] == ["match-*"]
    sessions = (
        ("final-4915112345678", "manifestLoadError"),
        ("match-20240115", "1001"),
        ("match-bob@example.com", "vjs-4"),  # the pattern's * does not vouch for an e-mail
    )
    for stream, code in sessions:
        for viewer, ip in enumerate(VIEWER_IPS):
            common = f'cid="{stream}",sid="s-{stream}-{viewer}",v=2'
            body = (
                f"{common},e=ps,sn=0,sta=s,ts={T}\n"
                f"{common},e=ps,sn=1,sta=f,ts={T + 1}\n"
                f'{common},e=e,sn=2,sta=f,ec=("{code}"),ts={T + 2}\n'
            )
            assert (await running.post(account["embed_key"], body, ip=ip)).status == 204
    await running.flush()

    rows = (
        await running.stats(account["api_token"], granularity="day", metrics="failures_by_code")
    )["rows"]
    codes = {row["stream"]: row["failures_by_code"] for row in rows}
    assert codes == {
        "final-4915112345678": {"manifestLoadError": 3},
        "match-20240115": {"1001": 3},
        "(redacted)": {"vjs-4": 3},
    }


async def test_the_cli_declares_streams(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ("--server", running.url, "--admin-token", ADMIN_TOKEN)

    async def run(*argv: str) -> Any:
        args = build_parser().parse_args([*argv, *common])
        code = await asyncio.to_thread(args.func, args)
        out = capsys.readouterr().out
        assert code == 0, out
        return json.loads(out)

    created = await run(
        "accounts", "create", "--name", "league", "--origin", ORIGIN,
        "--stream", "final-4915112345678", "--stream", "semi",
        "--stream-pattern", "match-*",
    )  # fmt: skip
    assert created["streams"] == ["final-4915112345678", "semi"]
    listing = await run("accounts", "list")
    [listed] = [a for a in listing["accounts"] if a["account_id"] == created["account_id"]]
    assert (listed["streams"], listed["stream_patterns"]) == (
        ["final-4915112345678", "semi"],
        ["match-*"],
    )
