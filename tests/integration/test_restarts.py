"""Restarts against real ``streamtally serve`` processes and a real ClickHouse server.

Each test sends the same scripted playbacks to a server that is left alone and to one that is
restarted in the middle (hot: SIGHUP; cold: SIGTERM, then a new process), at the same time,
so that both see the same minutes, and compares what each publishes."""

from __future__ import annotations

import asyncio
import marshal
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aggregator import hot_restart
from aggregator.restart_state import shapes
from tests.chserver import ClickHouseProcess
from tests.conftest import ChDatabase
from tests.integration.restart_traffic import (
    PLAYBACKS,
    UAS,
    Target,
    make_db,
    phases,
    post_report,
    send_phase,
    serve,
    wait_early_in_minute,
)

pytestmark = pytest.mark.timeout(300)


def pair(tmp_path: Path, ch: ClickHouseProcess, ch_database: ChDatabase) -> tuple[Target, Target]:
    other = make_db(ch, ch_database.database + "_b")
    alone = Target(serve(tmp_path / "alone", ch_database), ch_database)
    restarted = Target(serve(tmp_path / "restarted", other), other)
    alone.setup()
    restarted.setup()
    return alone, restarted


def sighup_and_wait(target: Target, generation: int, send: bool = True) -> None:
    assert target.proc.proc is not None
    if send:
        os.kill(target.proc.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum("hot restart" in line and "taken over" in line for line in target.proc.output) >= (
            generation
        ):
            return
        time.sleep(0.05)
    raise AssertionError("no hot restart:\n" + "".join(target.proc.output))


def test_hot_restart_mid_traffic_publishes_exactly_what_no_restart_does(
    tmp_path: Path, clickhouse_server: ClickHouseProcess, ch_database: ChDatabase
) -> None:
    alone, restarted = pair(tmp_path, clickhouse_server, ch_database)
    try:
        assert restarted.proc.proc is not None
        pid = restarted.proc.proc.pid
        assert restarted.health()["generation"] == 0
        accepted = [0, 0]
        script = phases()
        wait_early_in_minute()
        for n, phase in enumerate(script):
            if n == 3:
                os.kill(pid, signal.SIGHUP)  # the next reports wait in the backlog
            send_phase(phase, [alone, restarted], accepted)
            time.sleep(1.0)
        assert accepted[0] == accepted[1]
        assert restarted.health()["generation"] == 1
        assert restarted.proc.proc.pid == pid
        assert restarted.proc.alive()
        for target in (alone, restarted):
            target.flush()
        for granularity in ("minute", "hour", "day"):
            for by in ("", "device,browser"):
                expected = alone.stats(granularity, by)
                assert expected, (granularity, by)
                assert restarted.stats(granularity, by) == expected, (granularity, by)
        day = alone.stats("day")[0]
        assert day["views"] == PLAYBACKS
        assert day["exits_before_start"] == 5
        assert day["failures"] == 3
        assert day["rebuffer_count"] == 2
        assert day["concurrent_peak"] == 15
        exported = alone.export()
        assert exported[0].keys() == {"manifest"}
        assert len(exported) == 1 + exported[0]["manifest"]["rows"]
        assert restarted.export()[1:] == exported[1:]  # the manifest names its account
    finally:
        alone.proc.stop()
        restarted.proc.stop()


def test_cold_restart_mid_traffic_counts_no_playback_twice(
    tmp_path: Path, clickhouse_server: ClickHouseProcess, ch_database: ChDatabase
) -> None:
    alone, restarted = pair(tmp_path, clickhouse_server, ch_database)
    try:
        accepted = [0, 0]
        late: list[list[float]] = []
        wait_early_in_minute()
        for n, phase in enumerate(phases()):
            if n == 3:  # SIGTERM (drains, flushes), then a new process on the same data
                assert restarted.proc.stop() == 0
                data_dir = restarted.proc.data_dir
                restarted.proc = serve(data_dir, restarted.db)
            # the restarted server first: its reports arrive right after their ts
            late.append(send_phase(phase, [restarted, alone], accepted)[0])
            time.sleep(1.0)
        for target in (alone, restarted):
            target.flush()
        for granularity in ("hour", "day"):
            [expected] = alone.stats(granularity)
            [got] = restarted.stats(granularity)
            for metric in ("views", "exits_before_start", "failures", "startup_ms_p50",
                           "startup_ms_p95", "failures_by_code", "concurrent_peak"):  # fmt: skip
                assert got[metric] == expected[metric], (granularity, metric)
            # Playing time across the restart: the old run credits up to its stop, the new
            # one from there, on the server's arrival clock; the gap this replaces is
            # measured on the client's clock (ts) by the server left alone. Each report's
            # arrival lies between its ts and its answer, so the two differ by at most how
            # late the reports before the restart (less) or after it (more) were answered,
            # plus a millisecond per credit cut off (two per playing session).
            playing = expected["playing_seconds"]
            cut = 0.002 * PLAYBACKS + 0.001
            assert playing - late[2] - cut <= got["playing_seconds"] <= playing + late[3] + cut, (
                granularity, late[2], late[3],
            )  # fmt: skip
            # Unique viewers may count a viewer twice: the day's secret is gone, on purpose.
            assert expected["unique_viewers"] <= got["unique_viewers"] <= 2 * PLAYBACKS
        [minute] = alone.stats("minute")
        assert minute["concurrent_peak"] == 15
    finally:
        alone.proc.stop()
        restarted.proc.stop()


def test_concurrent_peak_across_a_cold_restart_is_not_the_sum_of_the_runs(
    tmp_path: Path, clickhouse_server: ClickHouseProcess, ch_database: ChDatabase
) -> None:
    import clickhouse_connect

    target = Target(serve(tmp_path / "data", ch_database), ch_database)
    target.setup()
    accepted = [0]
    try:
        wait_early_in_minute()
        script = phases()
        for phase in script[:3]:
            send_phase(phase, [target], accepted)
            time.sleep(0.5)
        assert target.proc.stop() == 0
        target.proc = serve(tmp_path / "data", ch_database)
        for phase in script[3:]:
            send_phase(phase, [target], accepted)
            time.sleep(0.5)
        target.flush()
        client = clickhouse_connect.get_client(
            host=clickhouse_server.host, port=clickhouse_server.port, database=ch_database.database
        )
        peaks = client.query(
            "SELECT part, max(concurrent_peak) FROM cells FINAL WHERE granularity = 'hour' "
            "AND breakdown = '' GROUP BY part"
        ).result_rows
        client.close()
        assert len(peaks) == 2  # one row per run
        assert all(peak == 15 for _, peak in peaks)
        for granularity in ("minute", "hour", "day"):
            [row] = target.stats(granularity)
            assert row["concurrent_peak"] == 15, granularity  # not 30
            assert row["views"] == PLAYBACKS, granularity  # no second view after the restart
    finally:
        target.proc.stop()


# -- privacy: the state crosses the exec in memory only -------------------------------------------


class MemfdThief(threading.Thread):
    """Watches /proc/<pid>/fd during a hot restart and reads the state's memfd, as anyone
    with the server's uid could: what it holds must then be found nowhere on disk."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.taken: bytes | None = None
        self.targets: set[str] = set()

    def run(self) -> None:
        fd_dir = Path(f"/proc/{self.pid}/fd")
        while not self.stop.is_set():
            for entry in list(_listdir(fd_dir)):
                target = _readlink(fd_dir / entry)
                if target is None:
                    continue
                self.targets.add(target)
                if hot_restart.MEMFD_NAME in target and self.taken is None:
                    data = _read(fd_dir / entry)
                    if data and _complete(data):
                        self.taken = data


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _complete(data: bytes) -> bool:
    try:
        hot_restart._split(bytearray(data))
    except Exception:
        return False
    return True


def test_hot_restart_leaves_no_state_key_or_secret_on_disk_in_fds_or_logs(
    tmp_path: Path, ch_database: ChDatabase
) -> None:
    target = Target(serve(tmp_path / "data", ch_database), ch_database)
    target.setup()
    try:
        assert target.proc.proc is not None
        pid = target.proc.proc.pid
        send_phase(phases()[0], [target], [0])
        send_phase(phases()[1], [target], [0])
        thief = MemfdThief(pid)
        thief.start()
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while target.health_or_none() is None or target.health()["generation"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        send_phase(phases()[2], [target], [0])  # counting goes on with the same secrets
        time.sleep(0.5)
        thief.stop.set()
        thief.join(10)
        assert thief.taken is not None, "the state's memfd was never seen"
        secrets, payload = hot_restart._split(bytearray(thief.taken))
        state = marshal.loads(payload)
        viewer_at = shapes()["session"].index("viewer")
        viewers = {values[viewer_at] for _, values in state["aggregator"]["sessions"]}
        assert len(viewers) == PLAYBACKS
        assert len(secrets) == 2  # process + today
        # the memfd itself holds no raw identifier: the rate limiters' buckets, the deduper
        # and the sessions are keyed by opaque handles, never an address, a sid or a UA
        assert len(state["limiters"]) == 2
        assert state["limiters"][0][0], "no bucket handed over"
        raw = [f"203.0.113.{i + 1}".encode() for i in range(PLAYBACKS)]
        raw += [f'"pb-{i}"'.encode() for i in range(PLAYBACKS)] + [ua.encode() for ua in UAS]
        raw += [b"Mozilla/5.0", b"203.0.113."]
        assert [n for n in raw if n in thief.taken] == []
        needles = [hot_restart.MAGIC]
        for secret in secrets.values():
            needles += [bytes(secret), secret.hex().encode()]
        for viewer in viewers:
            needles += [viewer.to_bytes(8, "big"), viewer.to_bytes(8, "little"),
                        str(viewer).encode(), f"{viewer:x}".encode()]  # fmt: skip
        # the data dir
        found = [
            (str(path), needle[:8])
            for path in (tmp_path / "data").rglob("*")
            if path.is_file()
            for needle in needles
            if needle in path.read_bytes()
        ]
        assert found == []
        # the logs
        output = "".join(target.proc.output).encode()
        assert [n[:8] for n in needles if n in output] == []
        # every file the process had open during and after the restart is a socket, a pipe,
        # the memfd (anonymous memory) or a file that holds none of it
        now_open = {
            _readlink(Path(f"/proc/{pid}/fd/{e}")) for e in _listdir(Path(f"/proc/{pid}/fd"))
        }
        assert not any(t and hot_restart.MEMFD_NAME in t for t in now_open), "memfd left open"
        for link in thief.targets | {t for t in now_open if t}:
            if link.startswith(("socket:", "pipe:", "anon_inode:", "/dev/", "/memfd:")):
                continue
            path = Path(link.removesuffix(" (deleted)"))
            if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:
                data = path.read_bytes()
                assert [n[:8] for n in needles if n in data] == [], link
    finally:
        target.proc.stop()


def test_hot_restart_under_load_loses_no_report_and_refuses_no_connection(
    tmp_path: Path, ch_database: ChDatabase
) -> None:
    target = Target(serve(tmp_path / "data", ch_database), ch_database)
    target.setup()
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        for n in range(400):  # bounded: count and time
            if stop.is_set():
                return
            body = (
                f'cid="load",e=ps,sid="w{worker}-{n}",sn=0,sta=p,ts={1795480000000 + n},v=2\n'
            ).encode()
            status = post_report(
                target.proc.url, target.embed_key, body, f"10.{worker}.{n // 200}.{n % 200 + 1}",
                "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36",
            )  # fmt: skip
            with lock:
                statuses.append(status)

    try:
        assert target.proc.proc is not None
        pid = target.proc.proc.pid
        wait_early_in_minute(40)
        threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(4)]
        for t in threads:
            t.start()
        while len(statuses) < 200:
            time.sleep(0.01)
        os.kill(pid, signal.SIGHUP)
        for t in threads:
            t.join(120)
        stop.set()
        assert target.health()["generation"] == 1
        assert set(statuses) == {204}, {s: statuses.count(s) for s in set(statuses)}
        target.flush()
        [day] = target.stats("day")
        assert day["views"] == len(statuses) == 1600  # each accepted event counted once
    finally:
        target.proc.stop()


# -- keep-alive clients: a hot restart closes their connections without losing a report ---------


@dataclass
class KeepAliveClient:
    """A player holding one keep-alive connection, as a browser does: a request that the
    server closes the connection under before any byte of an answer (an idle connection
    closed as the request went out) is sent again once on a new connection, as browsers do
    (Chromium's ShouldResendRequest; RFC 9112 section 9.3.1). Dedupe counts it once."""

    worker: int
    pause: float
    sent: int = 0
    answered: list[int] = field(default_factory=list)
    resent: int = 0
    lost: int = 0
    told_to_close: int = 0

    async def run(self, url: str, embed_key: str, stop: asyncio.Event) -> None:
        import aiohttp

        headers = {"Content-Type": "application/cmcd", "X-Forwarded-For": f"10.9.{self.worker}.1",
                   "User-Agent": UAS[0]}  # fmt: skip
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, keepalive_timeout=60)
        ) as session:
            n = 0
            while not stop.is_set():
                sid = f"ka{self.worker}-{n}"
                body = f'cid="ka",e=ps,sid="{sid}",sn=0,sta=p,ts={1795480000000 + n},v=2\n'
                n += 1
                self.sent += 1
                for attempt in (0, 1):
                    try:
                        async with session.post(
                            f"{url}/v1/r/{embed_key}?player=hls.js", data=body, headers=headers,
                            timeout=aiohttp.ClientTimeout(total=60),
                        ) as resp:  # fmt: skip
                            await resp.read()
                            self.answered.append(resp.status)
                            self.told_to_close += resp.headers.get("Connection") == "close"
                            break
                    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                        if attempt == 1:
                            self.lost += 1
                        else:
                            self.resent += 1
                await asyncio.sleep(self.pause)


async def test_a_hot_restart_loses_no_report_of_keep_alive_clients(
    tmp_path: Path, ch_database: ChDatabase
) -> None:
    """Players on keep-alive connections across a SIGHUP: busy ones (the next report as soon
    as one is answered) and idle ones (every 0.3 to 1.5 s, so their connection is idle when
    the old code stops).
    Every report is answered 204 (once resent at most, as browsers do), none is lost, and
    each is counted once. Busy players are told ``Connection: close`` on the old code's last
    answers, so none of them has a connection closed under a request."""
    target = Target(serve(tmp_path / "data", ch_database), ch_database)
    target.setup()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    busy = [KeepAliveClient(w, 0.0) for w in range(3)]
    idle = [KeepAliveClient(w, p) for w, p in zip(range(3, 7), (0.3, 0.7, 1.1, 1.5), strict=True)]
    clients = busy + idle
    try:
        assert target.proc.proc is not None
        tasks = [
            asyncio.create_task(c.run(target.proc.url, target.embed_key, stop)) for c in clients
        ]
        await asyncio.sleep(2.0)
        os.kill(target.proc.proc.pid, signal.SIGHUP)
        await loop.run_in_executor(None, sighup_and_wait, target, 1, False)
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*tasks)
        assert target.health()["generation"] == 1
        statuses = [s for c in clients for s in c.answered]
        assert set(statuses) == {204}, {s: statuses.count(s) for s in set(statuses)}
        assert [c.lost for c in clients] == [0] * len(clients)
        sent = sum(c.sent for c in clients)
        assert len(statuses) == sent
        assert [c.resent for c in busy] == [0] * len(busy)  # none met a closed connection
        assert all(c.told_to_close >= 1 for c in busy)  # each was told to leave instead
        target.flush()
        [day] = await loop.run_in_executor(None, target.stats, "day")
        assert day["views"] == sent  # each report counted once, resent or not
    finally:
        stop.set()
        target.proc.stop()


# -- abuse: a SIGHUP is no way around the rate limit -----------------------------------------------


BURST = 5
RATE = 0.1  # per second: one token back every 10 s


def test_a_sighup_does_not_refill_a_sessions_rate_limit(
    tmp_path: Path, ch_database: ChDatabase
) -> None:
    """The attack: a player spends its session's whole burst, then times a SIGHUP (a deploy)
    and spends it again on fresh buckets. Over the whole run a session may have no more
    than its burst plus what the rate gave back in the time that passed."""
    target = Target(
        serve(tmp_path / "data", ch_database, "--rate-limit-per-second", str(RATE),
              "--rate-limit-burst", str(BURST)),
        ch_database,
    )  # fmt: skip
    target.setup()
    ua = UAS[0]

    def report(sid: str, sn: int) -> int:
        body = f'cid="live-1",e=ps,sid="{sid}",sn={sn},sta=p,ts={1795480000000 + sn},v=2\n'
        return post_report(target.proc.url, target.embed_key, body.encode(), "203.0.113.50", ua)

    try:
        started = time.monotonic()
        before = [report("greedy", sn) for sn in range(BURST + 2)]
        assert before[:BURST] == [204] * BURST
        assert before[BURST:] == [429, 429]
        sighup_and_wait(target, 1)
        assert target.health()["generation"] == 1
        after = [report("greedy", sn) for sn in range(BURST + 2, 2 * BURST + 4)]
        elapsed = time.monotonic() - started
        budget = BURST + int(RATE * elapsed) + 1
        accepted = before.count(204) + after.count(204)
        assert accepted <= budget, (before, after, f"{elapsed:.1f} s")
        assert set(after) <= {204, 429}
        # the limiter still lets other sessions of the same address through
        assert report("neighbour", 0) == 204
    finally:
        target.proc.stop()


def test_a_state_the_new_code_cannot_read_is_one_log_line_and_an_empty_start(
    tmp_path: Path, ch_database: ChDatabase
) -> None:
    """A state of another format: the code says so once and starts empty, rather than crash."""
    listen = socket.create_server(("127.0.0.1", 0))
    state_fd = os.memfd_create("streamtally-hot-restart", 0)
    os.write(state_fd, hot_restart.MAGIC + (999).to_bytes(4, "little") + bytes(40))
    os.lseek(state_fd, 0, os.SEEK_SET)
    port = listen.getsockname()[1]
    os.set_inheritable(listen.fileno(), True)
    env = {hot_restart.ENV: f"listen={listen.fileno()},state={state_fd},generation=3"}
    proc = Target(
        serve_with_fds(tmp_path / "data", ch_database, env, port, listen, state_fd), ch_database
    )
    try:
        health = proc.health()
        assert health["generation"] == 3
        assert health["status"] == "ok"
        lines = [line for line in proc.proc.output if "cannot be taken" in line]
        assert len(lines) == 1
        assert "format 999" in lines[0]
    finally:
        proc.proc.stop()
        listen.close()
        os.close(state_fd)


def serve_with_fds(
    data_dir: Path,
    db: ChDatabase,
    env: dict[str, str],
    port: int,
    listen: socket.socket,
    state_fd: int,
) -> Any:
    from tests.integration.restart_traffic import ADMIN_TOKEN
    from tests.integration.serveproc import ServeProcess

    os.set_inheritable(state_fd, True)
    proc = ServeProcess(
        data_dir, "--clickhouse-url", db.url, "--database", db.database,
        "--admin-token", ADMIN_TOKEN, env=env, pass_fds=(listen.fileno(), state_fd),
    )  # fmt: skip
    proc.port = port
    proc.start()
    return proc
