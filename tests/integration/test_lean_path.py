"""The lean path (collector/lean.py) answers byte for byte as aiohttp's handlers do.

Each request goes once on a fresh connection (the lean path answers it) and once on a fresh
connection whose first request is ``GET /healthz`` (the connection is then aiohttp's); the
two answers must be equal but for the Date header. Requests whose answer depends on what
came before (a report's second copy is a duplicate, a sealed body's a replay) carry a
different session in each copy.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable

import pytest

from tests.integration.conftest import CHROME_UA, ORIGIN, PLAIN, SEALED, Running

_DATE = re.compile(rb"\r\nDate: [^\r]*")


def _line(sn: int = 0) -> str:
    sid = uuid.uuid4()
    return f'e=ps,sid="{sid}",sn={sn},sta=p,ts={int(time.time() * 1000)},cid="movie"\n'


def _post(
    key: str,
    body: bytes,
    *,
    ctype: str = PLAIN,
    origin: str | None = ORIGIN,
    query: str = "?player=hls.js",
    extra: str = "",
    ip: str = "198.51.100.7",
) -> bytes:
    head = (
        f"POST /v1/r/{key}{query} HTTP/1.1\r\nHost: t\r\nContent-Type: {ctype}\r\n"
        f"User-Agent: {CHROME_UA}\r\nX-Forwarded-For: {ip}\r\nContent-Length: {len(body)}\r\n"
        + (f"Origin: {origin}\r\n" if origin else "")
        + extra
        + "\r\n"
    )
    return head.encode() + body


def _options(key: str, origin: str | None = ORIGIN) -> bytes:
    head = f"OPTIONS /v1/r/{key} HTTP/1.1\r\nHost: t\r\n" + (
        f"Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n" if origin else ""
    )
    return (head + "\r\n").encode()


async def _exchange(running: Running, request: bytes, *, via_aiohttp: bool) -> bytes:
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        if via_aiohttp:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            await _answer(reader)
        writer.write(request)
        return await _answer(reader)
    finally:
        writer.close()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    match = re.search(rb"\r\nContent-Length: (\d+)", head, re.IGNORECASE)
    body = await reader.readexactly(int(match.group(1))) if match else b""
    return head + body


Case = Callable[[str, int], bytes]
CASES: dict[str, Case] = {
    "accepted": lambda key, i: _post(key, _line().encode()),
    "accepted-no-origin": lambda key, i: _post(key, _line().encode(), origin=None),
    "accepted-no-query": lambda key, i: _post(key, _line().encode(), query=""),
    "accepted-unknown-player": lambda key, i: _post(key, _line().encode(), query="?player=x"),
    "keep-alive-header": lambda key, i: _post(
        key, _line().encode(), extra="Connection: keep-alive\r\n"
    ),
    "malformed-line": lambda key, i: _post(key, (_line() + "e=,,,\n").encode()),
    "no-event": lambda key, i: _post(key, b"e=,,,\n"),
    "empty-body": lambda key, i: _post(key, b""),
    "not-utf8": lambda key, i: _post(key, b"\xff\xfe"),
    "wrong-type": lambda key, i: _post(key, _line().encode(), ctype="text/plain"),
    "unknown-key": lambda key, i: _post("nosuchkey", _line().encode()),
    "other-origin": lambda key, i: _post(key, _line().encode(), origin="https://evil.example"),
    "bad-sealed": lambda key, i: _post(key, b"\x01" * 60, ctype=SEALED),
    "bot": lambda key, i: _post(key, _line().encode()).replace(CHROME_UA.encode(), b"curl/8.5.0"),
    "preflight": lambda key, i: _options(key),
    "preflight-unknown-key": lambda key, i: _options("nosuchkey"),
    "preflight-other-origin": lambda key, i: _options(key, "https://evil.example"),
    "preflight-no-origin": lambda key, i: _options(key, None),
    "keys": lambda key, i: b"GET /v1/keys HTTP/1.1\r\nHost: t\r\n\r\n",
}

# What each case is about (so that "accepted" is not a 400 on both paths).
STATUS = {
    **dict.fromkeys(CASES, b"204"),
    **{"malformed-line": b"400", "no-event": b"400", "empty-body": b"400", "not-utf8": b"400"},
    **{"wrong-type": b"415", "unknown-key": b"404", "other-origin": b"403", "bad-sealed": b"400"},
    **{"preflight-unknown-key": b"404", "preflight-other-origin": b"403"},
    **{"preflight-no-origin": b"403", "keys": b"200"},
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_lean_answers_as_aiohttp_does(running: Running, case: str) -> None:
    account = await running.create_account()
    build = CASES[case]
    lean = await _exchange(running, build(account["embed_key"], 0), via_aiohttp=False)
    plain = await _exchange(running, build(account["embed_key"], 1), via_aiohttp=True)
    assert _DATE.sub(b"", lean) == _DATE.sub(b"", plain)
    assert b"\r\nDate: " in lean
    assert lean.split(b" ", 2)[1] == STATUS[case]


@pytest.mark.settings(address_rate_limit_per_second=0.5, address_rate_limit_burst=3)
async def test_rate_limit_answer_is_the_same(running: Running) -> None:
    """The per-address limit: 429 with Retry-After and the CORS headers, on both paths."""
    account = await running.create_account()
    key = account["embed_key"]
    answers: list[bytes] = []
    for via_aiohttp in (False, True):
        ip = "203.0.113.9" if via_aiohttp else "203.0.113.8"
        for _ in range(10):
            answer = await _exchange(
                running, _post(key, _line().encode(), ip=ip), via_aiohttp=via_aiohttp
            )
            if answer.startswith(b"HTTP/1.1 429"):
                answers.append(_DATE.sub(b"", answer))
                break
    assert len(answers) == 2
    assert answers[0] == answers[1]


async def test_pipelined_reports_are_answered_in_order(running: Running) -> None:
    """Two reports and a preflight in one write, then an admin-less route: every answer,
    in order, on one connection (the last one on aiohttp's path)."""
    account = await running.create_account()
    key = account["embed_key"]
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            _post(key, _line().encode())
            + _post("nosuchkey", _line().encode())
            + _options(key)
            + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
            + _post(key, _line().encode())
        )
        statuses = [(await _answer(reader)).split(b"\r\n", 1)[0] for _ in range(5)]
    finally:
        writer.close()
    assert statuses == [
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 204 No Content",
    ]


async def test_each_page_origin_gets_its_own_answer(running: Running) -> None:
    """The lean path makes the usual 204 once a second per allowed Origin: reports from two
    origins of one account, and one without, all at once, each answered for itself."""
    other = "https://other.example"
    account = await running.create_account(origins=(ORIGIN, other))
    key = account["embed_key"]
    answers = await asyncio.gather(
        *(
            _exchange(running, _post(key, _line().encode(), origin=o), via_aiohttp=False)
            for o in (ORIGIN, other, None, ORIGIN, other)
        )
    )
    allowed = [
        m.group(1) if (m := re.search(rb"Access-Control-Allow-Origin: (\S+)", a)) else None
        for a in answers
    ]
    assert allowed == [ORIGIN.encode(), other.encode(), None, ORIGIN.encode(), other.encode()]
    assert all(a.startswith(b"HTTP/1.1 204 ") for a in answers)
