"""How long a hot restart (SIGHUP) takes with many active sessions, and what a report sent
during it waits.

    python -m benchmarks.hot_restart [--sessions 50000] [--reports-per-second 200]

Starts a real ``streamtally serve`` (embedded store) on loopback, opens ``--sessions``
playback sessions (10 per report, 5,000 viewers), then sends reports from a bounded loop
(new connection each, as ``sendBeacon`` does) while it sends SIGHUP, and prints: the time
from SIGHUP until a report is answered again, the longest answer time of a report sent
during the restart, how many reports were not answered 204 (must be 0), and the pid before
and after (the same). The server's own log lines give the state's size and the time to
write and to read it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tests.integration.serveproc import ServeProcess

ADMIN_TOKEN = "bench-admin-token-0123456789abcdefghij"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari"
SESSIONS_PER_REPORT = 10


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body, headers)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def _report(port: int, embed_key: str, sids: list[str], viewer: int, sn: int) -> int:
    ts = int(time.time() * 1000)
    body = "\n".join(
        f'cid="bench",e=t,sid="{sid}",sn={sn},sta=p,ts={ts},v=2' for sid in sids
    ).encode()
    headers = {
        "Content-Type": "application/cmcd",
        "User-Agent": UA,
        "X-Forwarded-For": f"10.{viewer >> 16 & 255}.{viewer >> 8 & 255}.{viewer & 255}",
    }
    return _post(port, f"/v1/r/{embed_key}", body + b"\n", headers)


def run(sessions: int, rate: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        serve = ServeProcess(
            Path(tmp) / "data", "--admin-token", ADMIN_TOKEN,
            "--trusted-proxies", "127.0.0.1/32", "--flush-seconds", "5",
            "--rate-limit-per-second", "100000", "--rate-limit-burst", "100000",
        )  # fmt: skip
        serve.start()
        try:
            return _measure(serve, sessions, rate)
        finally:
            serve.stop()


def _measure(serve: ServeProcess, sessions: int, rate: float) -> dict[str, object]:
    req = urllib.request.Request(
        serve.url + "/v1/admin/accounts",
        data=json.dumps({"name": "bench", "origins": ["*"], "k": 2}).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        embed_key = json.loads(resp.read())["embed_key"]
    reports = sessions // SESSIONS_PER_REPORT
    started = time.monotonic()
    lock = threading.Lock()
    next_report = [0]

    def opener() -> None:
        while True:
            with lock:
                n = next_report[0]
                next_report[0] += 1
            if n >= reports:
                return
            sids = [f"s{n}-{i}" for i in range(SESSIONS_PER_REPORT)]
            assert _report(serve.port, embed_key, sids, n % 5000, 1) == 204

    workers = [threading.Thread(target=opener) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    opened = time.monotonic() - started
    assert serve.proc is not None
    pid = serve.proc.pid

    answers: list[tuple[float, float, int]] = []  # (sent, answered, status)
    hup_at = [0.0]
    stop = threading.Event()

    def prober(worker: int) -> None:
        n = 0
        while not stop.is_set() and n < 10_000:  # bounded by count and by the stop below
            sent = time.monotonic()
            status = _report(serve.port, embed_key, [f"p{worker}-{n}"], 6000 + worker, n)
            answers.append((sent, time.monotonic(), status))
            n += 1
            time.sleep(max(0.0, 4 / rate - (time.monotonic() - sent)))

    probers = [threading.Thread(target=prober, args=(w,)) for w in range(4)]
    for p in probers:
        p.start()
    time.sleep(1.0)
    hup_at[0] = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 120
    while not any("taken over" in line for line in serve.output):
        assert time.monotonic() < deadline, "no hot restart"
        time.sleep(0.01)
    time.sleep(2.0)
    stop.set()
    for p in probers:
        p.join(130)
    after = [a for a in answers if a[1] >= hup_at[0]]
    during = [a for a in after if a[0] <= hup_at[0] + 0.001 or a[1] - a[0] > 0.2]
    first_after = min((a[1] for a in answers if a[0] >= hup_at[0]), default=float("nan"))
    log = "".join(serve.output)
    written = re.search(r"state written to memory in ([\d.]+) s", log)
    taken = re.search(r"taken over \((\d+) sessions, (\d+) bytes\) in ([\d.]+) s", log)
    return {
        "sessions_opened": sessions,
        "seconds_to_open_them": round(opened, 1),
        "pid_unchanged": serve.alive() and serve.proc.pid == pid,
        "sighup_until_answered_again_s": round(first_after - hup_at[0], 3),
        "longest_answer_during_restart_s": round(max(a[1] - a[0] for a in after), 3),
        "reports_sent_during_restart": len(during),
        "reports_not_204": sum(1 for a in answers if a[2] != 204),
        "reports_total": len(answers),
        "state_write_s": float(written.group(1)) if written else None,
        "state_sessions": int(taken.group(1)) if taken else None,
        "state_bytes": int(taken.group(2)) if taken else None,
        "state_read_s": float(taken.group(3)) if taken else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=50_000)
    parser.add_argument("--reports-per-second", type=float, default=200.0)
    args = parser.parse_args()
    print(json.dumps(run(args.sessions, args.reports_per_second), indent=2))


if __name__ == "__main__":
    main()
