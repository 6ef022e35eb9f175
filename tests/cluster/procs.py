"""A cluster on 127.0.0.1 as real child processes: ``aggregate`` shards and ``collect``
collectors on one ClickHouse (the test server), the way an operator starts them."""

from __future__ import annotations

import re
import secrets
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.chserver import free_port
from tests.conftest import ChDatabase
from tests.integration.conftest import ADMIN_TOKEN
from tests.integration.serveproc import ServeProcess


class AggregateProcess(ServeProcess):
    command = "aggregate"


class CollectProcess(ServeProcess):
    command = "collect"


@dataclass
class Cluster:
    db: ChDatabase
    root: Path
    shards: int = 2
    collectors: int = 3
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    aggregators: list[AggregateProcess] = field(default_factory=list)
    collect: list[CollectProcess] = field(default_factory=list)
    link_ports: list[int] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.link_ports)

    def start(self, *extra: str) -> None:
        self.link_ports = [free_port() for _ in range(self.shards)]
        for i in range(self.shards):
            self.start_aggregator(i, *extra)
        for i in range(self.collectors):
            self.start_collector(i)
        self.wait_linked()

    def start_aggregator(self, i: int, *extra: str) -> AggregateProcess:
        proc = AggregateProcess(
            self.root / f"agg{i}",
            "--shard", f"{i}/{self.shards}", "--listen", f"127.0.0.1:{self.link_ports[i]}",
            "--aggregators", self.addresses,
            "--clickhouse-url", self.db.url, "--database", self.db.database,
            "--admin-token", ADMIN_TOKEN, "--cluster-secret", self.secret,
            "--flush-seconds", "3600", "--provisional-seconds", "3600",
            *extra,
        )  # fmt: skip
        proc.start()
        if i < len(self.aggregators):
            self.aggregators[i] = proc
        else:
            self.aggregators.append(proc)
        return proc

    def start_collector(self, i: int) -> CollectProcess:
        proc = CollectProcess(
            self.root / "collectors",  # one key folder for every collector
            "--aggregators", self.addresses, "--cluster-secret", self.secret,
            "--trusted-proxies", "127.0.0.1/32",
        )  # fmt: skip
        proc.start()
        if i < len(self.collect):
            self.collect[i] = proc
        else:
            self.collect.append(proc)
        return proc

    def wait_linked(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.linked(c) for c in self.collect if c.alive()):
                return
            time.sleep(0.1)
        raise AssertionError("collectors not linked:\n" + "".join(self.collect[0].output))

    @staticmethod
    def linked(proc: CollectProcess) -> bool:
        try:
            with urllib.request.urlopen(proc.url + "/healthz", timeout=5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def drained(self, timeout: float = 30.0) -> None:
        """Until every collector holds no event (each was acknowledged by its shard)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = 0
            for proc in self.collect:
                if not proc.alive():
                    continue
                text = proc.metrics().decode()
                held += sum(
                    int(float(m))
                    for m in re.findall(
                        r"^streamtally_link_buffered_events\{[^}]*\} (\S+)", text, re.M
                    )
                )
            if held == 0:
                return
            time.sleep(0.1)
        raise AssertionError("events still held by collectors")

    def stop(self) -> None:
        for proc in [*self.collect, *self.aggregators]:
            proc.stop()
        for i, proc in enumerate(self.aggregators):  # for a failed test's reader
            (self.root / f"aggregator{i}.log").write_text("".join(proc.output))
