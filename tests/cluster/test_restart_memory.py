"""Privacy invariant 2 across a cluster process's hot restart: its state and its secrets
cross the exec in anonymous memory only.

The attack: someone with the service's uid watches ``/proc/<pid>/fd`` while a shard and then
a collector restart, and copies the state's memfd (as :class:`MemfdThief` does). What it
holds must be opaque (no address, session id or user agent), and the viewer secrets and
viewer keys in it must then be found nowhere else: not in any file of the data dirs, not in
the logs, not in any file the processes had open; and the memfd must be closed afterwards.
"""

from __future__ import annotations

import marshal
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from aggregator import hot_restart
from aggregator.restart_state import shapes
from tests.chserver import ClickHouseProcess
from tests.cluster.procs import Cluster
from tests.cluster.test_cluster import known_everywhere
from tests.cluster.test_rolling_restart import RESTART_SECONDS, generation
from tests.cluster.traffic import create_account
from tests.integration.restart_traffic import UAS, http_call, make_db
from tests.integration.serveproc import ServeProcess
from tests.integration.test_restarts import MemfdThief, _listdir, _readlink

pytestmark = pytest.mark.timeout(300)

PLAYBACKS = 6


def steal_during_restart(proc: ServeProcess) -> tuple[MemfdThief, set[str]]:
    """SIGHUP with a thief watching; the thief and the fds open once it answers again."""
    assert proc.proc is not None
    pid = proc.proc.pid
    thief = MemfdThief(pid)
    thief.start()
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + RESTART_SECONDS
    while generation(proc) != 1:
        assert time.monotonic() < deadline, "".join(proc.output)[-3000:]
        time.sleep(0.05)
    thief.stop.set()
    thief.join(10)
    now_open = {_readlink(Path(f"/proc/{pid}/fd/{e}")) for e in _listdir(Path(f"/proc/{pid}/fd"))}
    return thief, {t for t in now_open if t}


def test_a_shard_and_a_collector_hand_their_state_over_in_memory_only(
    clickhouse_server: ClickHouseProcess, tmp_path: Path
) -> None:
    db = make_db(clickhouse_server, f"memory_{uuid.uuid4().hex[:8]}")
    cluster = Cluster(db, tmp_path, shards=1, collectors=1)
    try:
        cluster.start()
        account = create_account(cluster.aggregators[0].url, "memory")
        deadline = time.monotonic() + 30
        while not known_everywhere(cluster, str(account["embed_key"])):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        shard, collector = cluster.aggregators[0], cluster.collect[0]
        ips = [f"203.0.113.{i + 1}" for i in range(PLAYBACKS)]
        sids = [f"pb-memory-{i}" for i in range(PLAYBACKS)]
        for i in range(PLAYBACKS):
            ts = int(time.time() * 1000)
            line = f'cid="m",e=ps,sid="{sids[i]}",sn=0,sta=p,ts={ts},v=2'
            status, raw = http_call(
                "POST", f"{collector.url}/v1/r/{account['embed_key']}", line.encode(),
                {"Content-Type": "application/cmcd", "User-Agent": UAS[i % len(UAS)],
                 "X-Forwarded-For": ips[i]},
            )  # fmt: skip
            assert status == 204, raw

        shard_thief, shard_open = steal_during_restart(shard)
        collector_thief, collector_open = steal_during_restart(collector)

        assert shard_thief.taken is not None, "the shard's memfd was never seen"
        assert collector_thief.taken is not None, "the collector's memfd was never seen"
        secrets, payload = hot_restart._split(bytearray(shard_thief.taken))
        state = marshal.loads(payload)
        assert state["role"] == "shard"
        viewer_at = shapes()["session"].index("viewer")
        viewers = {values[viewer_at] for _, values in state["aggregator"]["sessions"]}
        assert len(viewers) == PLAYBACKS  # the sessions crossed the exec
        assert hot_restart.PROCESS_DAY in secrets  # the shard's session secret, and days
        assert len(secrets) >= 2
        collector_secrets, collector_payload = hot_restart._split(bytearray(collector_thief.taken))
        assert marshal.loads(collector_payload)["role"] == "collect"
        # Opaque: no address, session id or user agent in either.
        raw = [ip.encode() for ip in ips] + [sid.encode() for sid in sids]
        raw += [ua.encode() for ua in UAS] + [b"Mozilla/5.0", b"203.0.113."]
        for taken in (shard_thief.taken, collector_thief.taken):
            assert [n for n in raw if n in taken] == []
        # ... and what is secret in them is nowhere else.
        needles = [hot_restart.MAGIC]
        for secret in (*secrets.values(), *collector_secrets.values()):
            needles += [bytes(secret), secret.hex().encode()]
        for viewer in viewers:
            needles += [viewer.to_bytes(8, "big"), viewer.to_bytes(8, "little"),
                        str(viewer).encode(), f"{viewer:x}".encode()]  # fmt: skip
        found = [
            (str(path), needle[:8])
            for path in tmp_path.rglob("*")
            if path.is_file()
            for needle in needles
            if needle in path.read_bytes()
        ]
        assert found == []
        output = "".join([*shard.output, *collector.output]).encode()
        assert [n[:8] for n in needles if n in output] == []
        for now_open in (shard_open, collector_open):
            assert not any(hot_restart.MEMFD_NAME in t for t in now_open), "memfd left open"
        for link in shard_thief.targets | collector_thief.targets | shard_open | collector_open:
            if link.startswith(("socket:", "pipe:", "anon_inode:", "/dev/", "/memfd:")):
                continue
            path = Path(link.removesuffix(" (deleted)"))
            if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:
                data = path.read_bytes()
                assert [n[:8] for n in needles if n in data] == [], link
    finally:
        cluster.stop()
