"""The cluster's two rates, each process measured alone (``python -m benchmarks.cluster_bench``):

- events/s one ``aggregate`` process takes over the link: this process speaks the link as a
  collector would and sends pre-encoded batches of events (many sessions, viewers and
  streams, the benchmark's event mix) as fast as the shard acknowledges them;
- reports/s and reports per CPU-second of one ``collect`` process, fed by the benchmark's
  traffic generator through ``benchmarks/loadgen.py`` (closed loop, keep-alive).

Both use the embedded store (chDB) in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

from benchmarks import loadgen
from benchmarks.servers import cpu_seconds, free_port
from benchmarks.traffic import Traffic, load_templates
from collector import linkproto
from collector.handover import Dimensions, Event

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin-token-0123456789"
KINDS = ("t", "t", "t", "ps", "rr", "rr", "rr", "bc")
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "PL")


def start(command: str, data_dir: Path, *args: str, secret: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator.cli", command, "--data-dir", str(data_dir),
         "--metrics-listen", "off", *args],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "STREAMTALLY_CLUSTER_SECRET": secret},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "streamtally listening on" in line:
            return proc
    raise RuntimeError(f"{command} did not start")


def call(url: str, method: str = "GET", body: dict[str, object] | None = None) -> object:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode() if body else None, method=method,
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def event_rows(accounts: list[str], n: int, seed: int = 1) -> list[linkproto.Row]:
    rng = random.Random(seed)
    now = time.time()
    rows = []
    sns: dict[int, int] = {}  # each session numbers its events 0, 1, 2, ... as players do
    for i in range(n):
        session = rng.randrange(20_000)
        sn = sns[session] = sns.get(session, -1) + 1
        event = Event(
            accounts[session % len(accounts)], session, session * 7919 + 1, now,
            f"stream-{session % 12}", KINDS[i % len(KINDS)],
            Dimensions(COUNTRIES[session % 8], "desktop", "Windows", "Chrome", "hls.js"),
            ts_ms=int(now * 1000) + i, seq=sn, state="p",
            bitrate_kbps=3000, buffer_ms=12000, playhead_ms=i * 10,
        )  # fmt: skip
        rows.append(linkproto.event_row(event))
    return rows


async def link_rate(port: int, secret: str, rows: list[linkproto.Row], batch: int) -> float:
    frames = [
        linkproto.event_frame(seq, rows[i : i + batch])
        for seq, i in enumerate(range(0, len(rows), batch), 1)
    ]
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{port}{linkproto.PATH}") as ws,
    ):
        challenge = linkproto.unpack(await ws.receive_bytes())
        sn, cn = bytes.fromhex(challenge[2]), linkproto.nonce()
        proof = linkproto.proof(secret, "client", sn, cn)
        await ws.send_bytes(linkproto.pack("hello", "collector", cn.hex(), proof))
        await ws.receive_bytes()
        window, sent, acked = 8, 0, 0
        started = time.perf_counter()
        while acked < len(frames):
            while sent < len(frames) and sent - acked < window:
                await ws.send_bytes(frames[sent])
                sent += 1
            if linkproto.unpack(await ws.receive_bytes())[0] == "ack":
                acked += 1
        return time.perf_counter() - started


def raw_requests(keys: list[str], n: int) -> list[bytes]:
    traffic = Traffic(load_templates(), concurrent=2000, seed=3, start_ms=int(time.time() * 1000))
    raw = []
    for r in traffic.take(n):
        path = f"/v1/r/{keys[r.session % len(keys)]}?player={r.player}"
        raw.append(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/cmcd\r\nUser-Agent: {r.viewer.user_agent}\r\n"
            f"X-Forwarded-For: {r.viewer.ip}\r\nContent-Length: {len(r.body)}\r\n\r\n".encode()
            + r.body
        )
    return raw


def report_rate(name: str, port: int, pid: int, keys: list[str], seconds: float) -> None:
    raw = raw_requests(keys, 220_000)
    warm = asyncio.run(  # the parsers' first use, caches: not measured
        loadgen.run("127.0.0.1", port, raw[-20_000:], rate=None, duration=3.0)
    )
    assert warm.statuses.get(204, 0) > 0, dict(warm.statuses)
    cpu0 = cpu_seconds(pid)
    result = asyncio.run(loadgen.run("127.0.0.1", port, raw[:-20_000], rate=None, duration=seconds))
    cpu = cpu_seconds(pid) - cpu0
    ok = result.statuses.get(204, 0)
    print(
        f"{name}: {ok / result.duration:,.0f} reports/s accepted "
        f"({ok / cpu:,.0f} per CPU-second; statuses {dict(result.statuses)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    secret = secrets.token_hex(32)
    with tempfile.TemporaryDirectory() as tmp:
        link_port, api_port = free_port(), free_port()
        agg = start(
            "aggregate", Path(tmp) / "agg", "--shard", "0/1", "--listen",
            f"127.0.0.1:{link_port}", "--port", str(api_port), "--admin-token", ADMIN,
            secret=secret,
        )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{api_port}"
            accounts = [
                call(api + "/v1/admin/accounts", "POST", {"name": f"b{i}", "origins": ["*"]})
                for i in range(4)
            ]
            ids = [str(a["account_id"]) for a in accounts]  # type: ignore[index]
            rows = event_rows(ids, args.events)
            cpu0 = cpu_seconds(agg.pid)
            wall = asyncio.run(link_rate(link_port, secret, rows, 1000))
            cpu = cpu_seconds(agg.pid) - cpu0
            print(
                f"aggregator over the link: {len(rows) / wall:,.0f} events/s "
                f"({len(rows) / cpu:,.0f} per CPU-second; {len(rows):,} events in {wall:.1f} s)"
            )
            port = free_port()
            col = start(
                "collect", Path(tmp) / "col", "--port", str(port), "--aggregators",
                f"127.0.0.1:{link_port}", "--trusted-proxies", "127.0.0.1/32",
                "--rate-limit-per-second", "1000000", "--rate-limit-burst", "1000000",
                secret=secret,
            )  # fmt: skip
            try:
                time.sleep(2.0)
                keys = [str(a["embed_key"]) for a in accounts]  # type: ignore[index]
                report_rate("one collector", port, col.pid, keys, args.seconds)
            finally:
                col.terminate()
                col.wait(30)
        finally:
            agg.terminate()
            agg.wait(60)
        port = free_port()
        single = start(
            "serve", Path(tmp) / "serve", "--port", str(port), "--admin-token", ADMIN,
            "--trusted-proxies", "127.0.0.1/32", "--rate-limit-per-second", "1000000",
            "--rate-limit-burst", "1000000", secret=secret,
        )  # fmt: skip
        try:
            api = f"http://127.0.0.1:{port}"
            made = [
                call(api + "/v1/admin/accounts", "POST", {"name": f"s{i}", "origins": ["*"]})
                for i in range(4)
            ]
            keys = [str(a["embed_key"]) for a in made]  # type: ignore[index]
            report_rate("serve, for comparison", port, single.pid, keys, args.seconds)
        finally:
            single.terminate()
            single.wait(60)


if __name__ == "__main__":
    main()
