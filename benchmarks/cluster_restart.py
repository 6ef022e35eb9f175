"""A hot restart (SIGHUP) of a cluster shard with many sessions, and of a collector, under load.

    python -m benchmarks.cluster_restart [--sessions 50000] [--reports-per-second 200]
                                         [--clickhouse-server]

Starts a real ``streamtally aggregate`` (shard 0/1, the embedded store, or with
``--clickhouse-server`` a ClickHouse HTTP server of its own, as a cluster runs) and a real
``streamtally collect`` on loopback, opens ``--sessions`` playback sessions through the
collector (10 per report), then, while prober threads keep sending reports (a new session
each, retried on 503 or a broken connection until answered 204, as players do), sends
SIGHUP to the shard and, once it is back, to the collector. Prints for each: the time from
SIGHUP until it answers again with its new code (``/healthz`` generation 1, same pid), the
longest a report waited for its 204 across the restart, the 503s players got, and for the
shard the collector's longest link stall and the unacknowledged batches it sent again. At
the end the day's views must equal the sessions sent: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.chserver import ClickHouseProcess, free_port
from tests.cluster.procs import AggregateProcess, CollectProcess
from tests.integration.serveproc import ServeProcess

ADMIN_TOKEN = "bench-admin-token-0123456789abcdefghij"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari"
SESSIONS_PER_REPORT = 10
PROBERS = 4


def _call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read() or b"null")


def _report(port: int, embed_key: str, sids: list[str], viewer: int) -> int:
    ts = int(time.time() * 1000)
    lines = [f'cid="bench",e=ps,sid="{sid}",sn=0,sta=p,ts={ts},v=2' for sid in sids]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(
            "POST",
            f"/v1/r/{embed_key}",
            "\n".join(lines).encode() + b"\n",
            {
                "Content-Type": "application/cmcd",
                "User-Agent": UA,
                "X-Forwarded-For": f"10.{viewer >> 16 & 255}.{viewer >> 8 & 255}.{viewer & 255}",
            },
        )
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def _until_204(port: int, embed_key: str, sids: list[str], viewer: int) -> int:
    """Send until answered 204, as a player retries; the number of refusals."""
    refused = 0
    while _report(port, embed_key, sids, viewer) != 204:
        refused += 1
        time.sleep(0.05)
    return refused


def _generation(proc: ServeProcess) -> int | None:
    try:
        with urllib.request.urlopen(proc.url + "/healthz", timeout=120) as resp:
            value = json.loads(resp.read()).get("generation")
    except urllib.error.HTTPError as err:
        value = json.loads(err.read()).get("generation")
    except OSError:
        return None
    return value if isinstance(value, int) else None


class Probers:
    """Players sending a new session's report each, at ``rate`` reports/s in all."""

    def __init__(self, port: int, embed_key: str, rate: float) -> None:
        self.port, self.embed_key, self.rate = port, embed_key, rate
        self.answers: list[tuple[float, float, int]] = []  # (sent, answered 204, refusals)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,)) for w in range(PROBERS)]

    def _run(self, worker: int) -> None:
        n = 0
        while not self.stop.is_set() and n < 20_000:
            sent = time.monotonic()
            viewer = 10_000 + worker * 20_000 + n  # a viewer each: every minute's cell has k
            refusals = _until_204(self.port, self.embed_key, [f"p{worker}-{n}"], viewer)
            self.answers.append((sent, time.monotonic(), refusals))
            n += 1
            time.sleep(max(0.0, PROBERS / self.rate - (time.monotonic() - sent)))

    def __enter__(self) -> Probers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(300)


def _restart(proc: ServeProcess, probers: Probers) -> dict[str, Any]:
    assert proc.proc is not None
    pid = proc.proc.pid
    time.sleep(1.0)
    hup = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    while _generation(proc) != 1:
        assert time.monotonic() - hup < 120, "no hot restart:\n" + "".join(proc.output)
        time.sleep(0.01)
    back = time.monotonic() - hup
    time.sleep(2.0)
    across = [a for a in probers.answers if a[1] >= hup]
    log = "".join(proc.output)
    taken = re.search(
        r"taken over \((\d+) (?:sessions|held events), (\d+) bytes\) in ([\d.]+)", log
    )
    written = re.search(r"state written to memory in ([\d.]+) s", log)
    return {
        "pid_unchanged": proc.alive() and proc.proc.pid == pid,
        "state_write_s": float(written.group(1)) if written else None,
        "sighup_until_answering_s": round(back, 3),
        "longest_report_wait_s": round(max(a[1] - a[0] for a in across), 3),
        "reports_refused_then_resent": sum(a[2] for a in across),
        "state_items_bytes_read_s": taken.groups() if taken else None,
    }


def run(sessions: int, rate: float, server: bool = False) -> dict[str, Any]:
    secret = secrets.token_hex(32)
    with tempfile.TemporaryDirectory() as tmp:
        store: list[str] = []
        clickhouse: ClickHouseProcess | None = None
        if server:
            clickhouse = ClickHouseProcess(Path(tmp) / "clickhouse")
            clickhouse.start()
            store = ["--clickhouse-url", clickhouse.url]
        link_port = free_port()
        shard = AggregateProcess(
            Path(tmp) / "agg", *store, "--shard", "0/1", "--listen", f"127.0.0.1:{link_port}",
            "--admin-token", ADMIN_TOKEN, "--cluster-secret", secret,
            "--flush-seconds", "3600", "--provisional-seconds", "3600",
        )  # fmt: skip
        shard.start()
        collector = CollectProcess(
            Path(tmp) / "col", "--aggregators", f"127.0.0.1:{link_port}",
            "--cluster-secret", secret, "--trusted-proxies", "127.0.0.1/32",
            "--rate-limit-per-second", "100000", "--rate-limit-burst", "100000",
            "--address-rate-limit-per-second", "100000", "--address-rate-limit-burst", "100000",
        )  # fmt: skip
        try:
            collector.start()
            body = {"name": "b", "origins": ["*"], "k": 2}
            account = _call(shard.url + "/v1/admin/accounts", "POST", body)
            embed_key = str(account["embed_key"])
            while _report(collector.port, embed_key, ["warm"], 1) != 204:
                time.sleep(0.1)
            started = time.monotonic()
            lock, next_report = threading.Lock(), [0]

            def opener() -> None:
                while True:
                    with lock:
                        n = next_report[0]
                        next_report[0] += 1
                    if n >= sessions // SESSIONS_PER_REPORT:
                        return
                    sids = [f"s{n}-{i}" for i in range(SESSIONS_PER_REPORT)]
                    _until_204(collector.port, embed_key, sids, n % 5000)

            openers = [threading.Thread(target=opener) for _ in range(8)]
            for t in openers:
                t.start()
            for t in openers:
                t.join()
            opened = time.monotonic() - started
            with Probers(collector.port, embed_key, rate) as probers:
                on_shard = _restart(shard, probers)
                on_collector = _restart(collector, probers)
            log = "".join(collector.output)
            stalls = [float(s) for s in re.findall(r"up again after ([\d.]+) s", log)]
            resent = [int(s) for s in re.findall(r"; (\d+) unacknowledged batch", log)]
            on_shard["longest_link_stall_s"] = max(stalls, default=None)
            on_shard["unacked_batches_resent"] = sum(resent)
            _call(shard.url + "/v1/admin/flush", "POST", {})
            token = str(account["api_token"])
            req = urllib.request.Request(
                shard.url + "/v1/stats?granularity=day",
                headers={"Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(req, timeout=120) as resp:
                views = sum(int(r["views"]) for r in json.loads(resp.read())["rows"])
            opened_sessions = (sessions // SESSIONS_PER_REPORT) * SESSIONS_PER_REPORT
            sent = 1 + opened_sessions + len(probers.answers)  # the warm-up's, too
            return {
                "sessions_opened": sessions,
                "seconds_to_open_them": round(opened, 1),
                "shard": on_shard,
                "collector": on_collector,
                "sessions_sent": sent,
                "views_counted": views,
                "numbers_equal": views == sent,
            }
        finally:
            collector.stop()
            shard.stop()
            if clickhouse is not None:
                clickhouse.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--reports-per-second", type=float, default=200.0)
    parser.add_argument(
        "--clickhouse-server", action="store_true", help="a ClickHouse server, not chDB"
    )
    args = parser.parse_args()
    result = run(args.sessions, args.reports_per_second, args.clickhouse_server)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
