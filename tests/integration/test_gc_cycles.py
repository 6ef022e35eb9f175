"""A served connection leaves nothing for the cyclic garbage collector.

The GC policy of a serving process (aggregator/gcpolicy.py) retires whatever is alive every
ten seconds, connections in progress included; one that ended in a reference cycle would
then be garbage only the hourly sweep finds, and a busy collector opens and closes
thousands of connections a second. So: connections of every kind a player or an operator
makes, each on its own socket from another process, with the collector off; then a full
collection must find nothing unreachable.

On uvloop, as every serving command runs: the standard library's selector transports are
themselves left in cycles (one per connection), uvloop's are not.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from aggregator.api.auth import ACCOUNT_STORE
from aggregator.app import RUNNER_OPTIONS, create_app
from collector.lean import LeanAppRunner
from tests.conftest import ChDatabase
from tests.integration.conftest import CHROME_UA, ORIGIN, make_configs

CLIENT = r"""
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
request = sys.stdin.buffer.read()
for _ in range(count):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        first = s.recv(65536).split(b"\r\n", 1)[0]
print(first.decode())
"""


def _post(key: str, body: bytes) -> bytes:
    head = (
        f"POST /v1/r/{key}?player=hls.js HTTP/1.1\r\nHost: t\r\n"
        f"Content-Type: application/cmcd\r\nUser-Agent: {CHROME_UA}\r\nOrigin: {ORIGIN}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _line() -> bytes:
    return f'e=ps,sid="one",sn=0,sta=s,ts={int(time.time() * 1000)},cid="c",v=2\n'.encode()


KINDS = {
    "report": (lambda key: _post(key, _line()), "204"),
    "malformed-report": (lambda key: _post(key, b"e=,,,\n"), "400"),
    "unknown-key": (lambda key: _post("nosuchkey", _line()), "404"),
    "preflight": (
        lambda key: (
            f"OPTIONS /v1/r/{key} HTTP/1.1\r\nHost: t\r\nOrigin: {ORIGIN}\r\n"
            "Access-Control-Request-Method: POST\r\n\r\n"
        ).encode(),
        "204",
    ),
    "keys": (lambda key: b"GET /v1/keys HTTP/1.1\r\nHost: t\r\n\r\n", "200"),
    "healthz (aiohttp)": (lambda key: b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n", "200"),
    "chunked (aiohttp)": (
        lambda key: (
            (
                f"POST /v1/r/{key} HTTP/1.1\r\nHost: t\r\nContent-Type: application/cmcd\r\n"
                f"User-Agent: {CHROME_UA}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
            + b"%x\r\n" % len(_line())
            + _line()
            + b"\r\n0\r\n\r\n"
        ),
        "204",
    ),
}


async def _serve_and_count(data_dir: Path, ch: ChDatabase, kind: str) -> tuple[str, int]:
    """The service on uvloop as ``serve`` runs it (the lean runner in front of aiohttp's):
    100 connections of ``kind``; (the last status line, what a full collection found
    beyond what the same run of the client with no connection leaves)."""
    app = await create_app(*make_configs(data_dir, ch))
    runner = LeanAppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        account, _ = await app[ACCOUNT_STORE].create("gc", [ORIGIN], k=2)
        build, _status = KINDS[kind]
        request = build(account.embed_key)

        async def connections(count: int) -> str:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLIENT, str(port), str(count),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(request), 60)
            return out.decode()

        async def garbage(count: int) -> tuple[str, int]:
            gc.collect()
            gc.disable()
            try:
                last = await connections(count)
                await asyncio.sleep(0.5)  # every connection closed and forgotten
                return last, gc.collect()
            finally:
                gc.enable()

        await connections(3)  # first-use caches (parsers, lookups) before counting
        _, baseline = await garbage(0)  # what starting the client process itself leaves
        last, found = await garbage(100)
        return last, found - baseline
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
def test_a_connection_leaves_no_cycle(tmp_path: Path, ch_database: ChDatabase, kind: str) -> None:
    last, found = uvloop.run(_serve_and_count(tmp_path / "data", ch_database, kind))
    assert last.split(" ")[1] == KINDS[kind][1], last
    # A cycle left by each connection would be 100 objects or more; the client process's
    # own start and stop leave a few (+-1 between runs).
    assert found < 10, found
