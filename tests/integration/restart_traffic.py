"""Scripted playbacks sent to several real ``streamtally serve`` processes at once, so that a
restarted one can be compared with one that was not (same traffic, same minutes)."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.chserver import ClickHouseProcess
from tests.conftest import ChDatabase
from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.serveproc import ServeProcess

UAS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0",
)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
PLAYBACKS = 20


def http_call(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def serve(data_dir: Any, db: ChDatabase, *extra: str) -> ServeProcess:
    proc = ServeProcess(
        data_dir, "--clickhouse-url", db.url, "--database", db.database,
        "--admin-token", ADMIN_TOKEN, "--trusted-proxies", "127.0.0.1/32",
        "--flush-seconds", "3600", "--provisional-seconds", "3600", *extra,
    )  # fmt: skip
    proc.start()
    return proc


def make_db(ch: ClickHouseProcess, name: str) -> ChDatabase:
    import clickhouse_connect

    client = clickhouse_connect.get_client(host=ch.host, port=ch.port)
    client.command(f"CREATE DATABASE IF NOT EXISTS {name}")
    client.close()
    return ChDatabase(ch.url, name)


def create_account(url: str) -> dict[str, Any]:
    body = json.dumps({"name": "continuity", "origins": ["*"], "k": 2}).encode()
    status, raw = http_call("POST", url + "/v1/admin/accounts", body, ADMIN)
    assert status == 201, raw
    account: dict[str, Any] = json.loads(raw)
    return account


def post_report(url: str, embed_key: str, body: bytes, ip: str, ua: str) -> int:
    """One report on a new connection (as a browser's sendBeacon does); 0 if refused."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(
            "POST",
            f"/v1/r/{embed_key}?player=hls.js",
            body,
            {"Content-Type": "application/cmcd", "X-Forwarded-For": ip, "User-Agent": ua},
        )
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


@dataclass
class Target:
    """One server under the traffic, with its account."""

    proc: ServeProcess
    db: ChDatabase
    embed_key: str = ""
    api_token: str = ""

    def setup(self) -> None:
        account = create_account(self.proc.url)
        self.embed_key, self.api_token = account["embed_key"], account["api_token"]

    def flush(self) -> None:
        status, raw = http_call("POST", self.proc.url + "/v1/admin/flush", b"", ADMIN)
        assert status == 200, raw

    def stats(self, granularity: str, by: str = "") -> list[dict[str, Any]]:
        now = time.time()
        params = f"granularity={granularity}&from={_iso(now - 2 * 86400)}&to={_iso(now + 86400)}"
        if by:
            params += f"&by={by}"
        status, raw = http_call(
            "GET",
            f"{self.proc.url}/v1/stats?{params}",
            headers={"Authorization": f"Bearer {self.api_token}"},
        )
        assert status == 200, raw
        rows: list[dict[str, Any]] = json.loads(raw)["rows"]
        return rows

    def export(self) -> list[dict[str, Any]]:
        status, raw = http_call(
            "GET",
            f"{self.proc.url}/v1/export?format=ndjson",
            headers={"Authorization": f"Bearer {self.api_token}"},
        )
        assert status == 200, raw
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def health_or_none(self) -> dict[str, Any] | None:
        try:
            return self.health()
        except OSError:
            return None

    def health(self) -> dict[str, Any]:
        status, raw = http_call("GET", self.proc.url + "/healthz")
        assert status == 200, raw
        result: dict[str, Any] = json.loads(raw)
        return result


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _line(i: int, sn: int, kind: str, sta: str | None, ts: int, extra: str = "") -> str:
    state = f",sta={sta}" if sta else ""
    return f'br=3000,cid="live-1",e={kind}{extra},sid="pb-{i}",sn={sn}{state},ts={ts},v=2'


def phases() -> list[Callable[[int, int], str | None]]:
    """The script: for each phase, playback i's report at client time ts (None: silent).
    0-14 play (3 with msd, 2 rebuffer, 2 pause), 15-16 exit before start, 17-19 fail."""

    def start(i: int, ts: int) -> str | None:
        lines = [_line(i, 0, "ps", "d", ts - 900), _line(i, 1, "ps", "s", ts - 800)]
        if i < 15:
            msd = ",msd=650" if i < 3 else ""
            lines.append(_line(i, 2, "ps", "p", ts - 100 * (i % 5), msd))
        return "\n".join(lines)

    def middle(i: int, ts: int) -> str | None:
        if i in (15, 16):
            return _line(i, 2, "ps", "e", ts)
        if i >= 17:
            return _line(i, 2, "ps", "f", ts, ',ec="MEDIA_ERR_DECODE"')
        return _line(i, 3, "t", "p", ts)

    def before_restart(i: int, ts: int) -> str | None:
        if i < 2:
            return _line(i, 4, "ps", "r", ts)
        return _line(i, 4, "t", "p", ts) if i < 15 else None

    def after_restart(i: int, ts: int) -> str | None:
        if i < 2:
            return _line(i, 5, "ps", "p", ts)
        if i in (5, 6):
            return _line(i, 5, "ps", "a", ts)
        return _line(i, 5, "t", "p", ts) if i < 15 else None

    def last(i: int, ts: int) -> str | None:
        if i in (5, 6):
            return _line(i, 6, "ps", "p", ts)
        if i < 10:
            return _line(i, 6, "t", "p", ts)
        return _line(i, 6, "ps", "e", ts) if i < 15 else None

    return [start, middle, before_restart, after_restart, last]


def send_phase(
    phase: Callable[[int, int], str | None], targets: Sequence[Target], accepted: list[int]
) -> list[float]:
    """Send one phase, playback after playback. Each report's ``ts`` is the client clock
    just before it goes to the first target, as a player stamps an event when it sends it.
    Returns, per target, the sum over the reports of how long after its ``ts`` each was
    answered: the server's arrival time of a report lies in [ts, ts + that]."""
    late = [0.0] * len(targets)
    for i in range(PLAYBACKS):
        stamped = time.time()
        ts = int(stamped * 1000)  # floored: never after the moment it stands for
        body = phase(i, ts)
        if body is None:
            continue
        for n, target in enumerate(targets):
            status = post_report(
                target.proc.url, target.embed_key, (body + "\n").encode(),
                f"203.0.113.{i + 1}", UAS[i % len(UAS)],
            )  # fmt: skip
            late[n] += time.time() - ts / 1000
            assert status == 204, (n, i, status)
            accepted[n] += 1
    return late


def wait_early_in_minute(latest_second: float = 25.0) -> None:
    """Start when the traffic (well under a minute) stays within one minute, hour and day."""
    while time.time() % 60 > latest_second:
        time.sleep(0.5)
