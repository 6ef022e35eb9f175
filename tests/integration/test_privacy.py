"""Privacy invariants 1 and 2 (design.md), end to end.

1. A distinctive IP address, user agent and session id sent in many reports appear in no
   file the service writes (embedded ClickHouse, keys, spool, admin token), no line of its
   output, no /metrics output and no ClickHouse table.
2. The viewer secret of a day is never written anywhere, and once destroyed the day's keys
   cannot be recomputed.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pytest

from collector.app import VIEWERS
from tests.integration.conftest import (
    ADMIN_TOKEN,
    SEALED,
    Running,
    decode_ohttp_keys,
    seal_independently,
)
from tests.integration.serveproc import ServeProcess

CANARY_IP = "203.0.113.77"
CANARY_UA = "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36 QzCanaryUA/7.3"
CANARY_SID = "c4nary51-d000-4000-8000-00000000beef"
NEEDLES = (CANARY_IP.encode(), b"QzCanaryUA", CANARY_SID.encode())


def report_lines(sn0: int, n: int) -> str:
    return "".join(
        f'cid="stream-42",e=ps,sid="{CANARY_SID}",sn={sn0 + i},sta=p,ts={1795480000000 + i},v=2\n'
        for i in range(n)
    )


def files_containing(folder: Path, needles: tuple[bytes, ...]) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits.extend(f"{path}: {n!r}" for n in needles if n in data)
    return hits


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_canary_ip_ua_and_sid_are_written_nowhere_embedded(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    serve = ServeProcess(
        data_dir, "--trusted-proxies", "127.0.0.1/32", "--admin-token", ADMIN_TOKEN,
        "--log-level", "debug",
    )  # fmt: skip
    serve.start()
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
        status, raw = _http(
            "POST", serve.url + "/v1/admin/accounts",
            json.dumps({"name": "canary", "origins": ["*"], "k": 2}).encode(), admin,
        )  # fmt: skip
        assert status == 201, raw
        embed_key = json.loads(raw)["embed_key"]
        _, keys = serve.get("/v1/keys")
        [config] = decode_ohttp_keys(keys)
        headers = {"User-Agent": CANARY_UA, "X-Forwarded-For": CANARY_IP}
        statuses = set()
        for i in range(60):
            plain = report_lines(i * 4, 2)
            sealed = seal_independently(report_lines(i * 4 + 2, 2).encode(), config)
            bad = report_lines(1000 + i, 1) + f'e=ps,sid="{CANARY_SID}",ts=oops\n'
            for body, ctype in ((plain.encode(), "application/cmcd"), (sealed, SEALED),
                                (bad.encode(), "application/cmcd")):  # fmt: skip
                status, _ = _http(
                    "POST", serve.url + f"/v1/r/{embed_key}",
                    body, {**headers, "Content-Type": ctype},
                )  # fmt: skip
                statuses.add(status)
        assert statuses == {204, 400}
        for i in range(3):  # other viewers, so that cells reach k and really get written
            other = {
                "User-Agent": "Mozilla/5.0 Firefox/140.0",
                "X-Forwarded-For": f"192.0.2.{i + 1}",
            }
            body = f'cid="stream-42",e=ps,sid="other-{i}",sn=0,sta=p,ts=1795480000000,v=2\n'
            status, _ = _http(
                "POST", serve.url + f"/v1/r/{embed_key}", body.encode(),
                {**other, "Content-Type": "application/cmcd"},
            )  # fmt: skip
            assert status == 204
        status, _ = _http("POST", serve.url + "/v1/admin/flush", b"", admin)
        assert status == 200
        metrics = serve.metrics()
        assert not [n for n in NEEDLES if n in metrics]
    finally:
        assert serve.stop() == 0
    output = "".join(serve.output).encode()
    assert b"final flush" in output  # the log really was captured, at debug level
    assert not [n for n in NEEDLES if n in output]
    assert files_containing(data_dir, NEEDLES) == []
    # ClickHouse compresses its parts, so also ask the engine itself: no table holds them.
    dump = subprocess.run(
        [sys.executable, "-c", DUMP_EMBEDDED, str(data_dir / "clickhouse")],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert b"stream-42" in dump.stdout  # the dump really reads the cells
    assert not [n for n in NEEDLES if n in dump.stdout]


DUMP_EMBEDDED = """
import sys, chdb
path = sys.argv[1]
sess = chdb.session.Session(path)
tables = sess.query(
    "SELECT database, name FROM system.tables WHERE database NOT IN "
    "('system', 'INFORMATION_SCHEMA', 'information_schema')", "TSV").bytes().decode().split()
for db, name in zip(tables[::2], tables[1::2]):
    sys.stdout.write(sess.query(f"SELECT * FROM `{db}`.`{name}`", "TSV").bytes().decode())
"""


async def test_canary_is_in_no_clickhouse_table_log_line_or_metric(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = await running.create_account(origins=("*",), k=2)
    [config] = await running.keys()
    for i in range(30):
        assert (
            await running.post(
                account["embed_key"], report_lines(i * 2, 2), ip=CANARY_IP, ua=CANARY_UA
            )
        ).status == 204
        sealed = seal_independently(report_lines(500 + i, 1).encode(), config)
        resp = await running.post(
            account["embed_key"], sealed, ctype=SEALED, ip=CANARY_IP, ua=CANARY_UA
        )
        assert resp.status == 204
    for i in range(12):  # enough other viewers that cells pass k and get written
        other = f'cid="stream-42",e=ps,sid="other-{i}",sn=0,sta=p,ts=1795480000000,v=2\n'
        assert (
            await running.post(account["embed_key"], other, ip=f"198.51.100.{i + 1}")
        ).status == 204
    flushed = await running.flush()
    assert flushed["rows"] > 0
    metrics = (await running.metrics()).encode()
    assert not [n for n in NEEDLES if n in metrics]
    logs = "\n".join(r.getMessage() for r in caplog.records).encode()
    assert not [n for n in NEEDLES if n in logs]
    client = clickhouse_connect.get_client(
        host="127.0.0.1", port=int(running.ch.url.rsplit(":", 1)[1]), database=running.ch.database
    )
    try:
        tables = [r[0] for r in client.query("SHOW TABLES").result_rows]
        assert "cells" in tables
        dump = b"".join(client.raw_query(f"SELECT * FROM `{t}` FORMAT TSV") for t in tables)
    finally:
        client.close()
    assert b"stream-42" in dump
    assert not [n for n in NEEDLES if n in dump]
    assert files_containing(running.data_dir, NEEDLES) == []


async def test_viewer_secret_is_never_on_disk_and_gone_after_the_day(running: Running) -> None:
    account = await running.create_account()
    assert (await running.post(account["embed_key"], report_lines(0, 1))).status == 204
    viewers = running.app[VIEWERS]
    now = datetime.now(UTC)
    today = viewers.key(account["account_id"], CANARY_IP, CANARY_UA, now.timestamp())
    tomorrow_at = (now + timedelta(days=1)).timestamp()
    tomorrow = viewers.key(account["account_id"], CANARY_IP, CANARY_UA, tomorrow_at)
    assert today is not None
    assert tomorrow is not None
    assert today != tomorrow
    secrets_now = [bytes(s) for s in viewers._secrets.values()]
    assert secrets_now
    assert all(len(s) >= 16 for s in secrets_now)
    assert files_containing(running.data_dir, tuple(secrets_now)) == []
    assert files_containing(running.data_dir, tuple(s.hex().encode() for s in secrets_now)) == []
    # Past the day and its grace, today's secret is destroyed: today's key cannot be made again.
    viewers._clock = lambda: tomorrow_at + 2 * 86400
    viewers.rotate()
    assert viewers.key(account["account_id"], CANARY_IP, CANARY_UA, now.timestamp()) is None
