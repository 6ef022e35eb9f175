"""The servers under test, each a child process pinned to one core, with its CPU and memory.

- ``nginx``: answers 204 to everything (the machine's HTTP limit).
- ``aiohttp``: a bare aiohttp + uvloop handler answering 204 (the framework limit).
- ``aiohttp+hpke``: the same handler opening every body with HPKE (the sealed ceiling).
- ``streamtally``: ``python -m aggregator.cli serve`` with aggregation on and the embedded
  ClickHouse in its data dir.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
error_log stderr error;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {tmp}/body;
    client_max_body_size 1m;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 204; }}
    }}
}}
"""


class ServerError(RuntimeError):
    """A server did not start or died."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def helper_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process's threads other than its main one (for StreamTally: the
    ClickHouse client's and chDB's own threads, pinned to the event loop's core)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name == str(pid):
            continue
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = text[text.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc/<pid>/stat's ppid field)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/statm."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def _die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the benchmark process dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


class Server:
    """A server process pinned to ``cpu``, answering on 127.0.0.1:``port``."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        port: int,
        cpu: int | None,
        workdir: Path,
        env: dict[str, str] | None = None,
        cpus: frozenset[int] | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.port = port
        self.cpu = cpu
        # Several cores for the process and every child it starts (they inherit it);
        # ``cpus`` wins over ``cpu``. Neither: not pinned.
        self.cpus = cpus if cpus is not None else (frozenset({cpu}) if cpu is not None else None)
        self.workdir = workdir
        self.env = env
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    host = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        cpus = self.cpus

        def pin() -> None:
            _die_with_parent()
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(
            self.command,
            cwd=self.workdir,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(self.env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=pin,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise ServerError(f"{self.name} did not start:\n" + "".join(self.output[-40:]))

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def nginx_available() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def nginx(workdir: Path, cpu: int | None) -> Server:
    binary = nginx_available()
    if binary is None:
        raise ServerError("nginx is not installed (Debian: apt-get install nginx)")
    tmp = workdir / "nginx"
    (tmp / "body").mkdir(parents=True, exist_ok=True)
    (tmp / "logs").mkdir(exist_ok=True)
    port = free_port()
    (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
    return Server(
        "nginx", [binary, "-p", str(tmp), "-c", "nginx.conf"], port=port, cpu=cpu, workdir=tmp
    )


def aiohttp_baseline(workdir: Path, cpu: int | None, *, hpke: bool) -> Server:
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.baseline_server", "--port", str(port)]
    if hpke:
        command.append("--hpke")
    return Server(
        "aiohttp+hpke" if hpke else "aiohttp", command, port=port, cpu=cpu, workdir=workdir
    )


class StreamTally(Server):
    """``streamtally serve`` with an admin token of its own and the client API it needs."""

    def __init__(
        self,
        workdir: Path,
        cpu: int | None,
        extra: Sequence[str] = (),
        *,
        workers: int = 1,
        cpus: frozenset[int] | None = None,
    ) -> None:
        port = free_port()
        self.workers = workers
        self.metrics_port = free_port()
        self.admin_token = "sta_" + secrets.token_urlsafe(24)  # never starts with "-"
        self.data_dir = workdir / "streamtally-data"
        command = [
            sys.executable, "-m", "aggregator.cli", "serve",
            "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(self.data_dir),
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--trusted-proxies", "127.0.0.1/32",
            "--admin-token", self.admin_token,
            "--default-k", "2",
            "--log-level", "warning",
            *(("--workers", str(workers)) if workers > 1 else ()),
            *extra,
        ]  # fmt: skip
        super().__init__("streamtally", command, port=port, cpu=cpu, workdir=workdir, cpus=cpus)

    def start(self, timeout: float = 120.0) -> None:
        super().start(timeout)
        if self.workers > 1:  # the port answers once one child listens: wait for them all
            deadline = time.monotonic() + timeout
            while not any("collector workers)" in line for line in self.output):
                if time.monotonic() > deadline or not self.alive():
                    self.stop()
                    raise ServerError(
                        "streamtally --workers did not start:\n" + "".join(self.output[-40:])
                    )
                time.sleep(0.05)

    def collector_pids(self) -> list[int]:
        """With ``--workers``: the ``collect`` children (the parent is the aggregator)."""
        if self.workers <= 1:
            return []
        return [pid for pid in children(self.pid) if _is_collector(pid)]

    def cpu_seconds(self) -> float:
        """The whole server: with ``--workers``, the aggregator and its collectors."""
        own = cpu_seconds(self.pid)
        return own + sum(_cpu_or_zero(pid) for pid in self.collector_pids())

    def process_cpu(self) -> dict[str, Any]:
        """CPU seconds so far of the aggregator process and of each collector child."""
        return {
            "aggregator": cpu_seconds(self.pid),
            "collectors": {pid: _cpu_or_zero(pid) for pid in self.collector_pids()},
        }

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        timeout: float = 120.0,
    ) -> tuple[int, bytes]:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def create_account(self, name: str, k: int = 2) -> dict[str, Any]:
        status, raw = self.request(
            "POST",
            "/v1/admin/accounts",
            token=self.admin_token,
            body={"name": name, "origins": ["*"], "k": k},
        )
        if status >= 300:
            raise ServerError(f"creating account {name!r}: HTTP {status}: {raw[:300]!r}")
        account: dict[str, Any] = orjson.loads(raw)
        return account

    def flush(self) -> dict[str, Any]:
        status, raw = self.request("POST", "/v1/admin/flush", token=self.admin_token)
        if status >= 300:
            raise ServerError(f"flush: HTTP {status}: {raw[:300]!r}")
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def metrics_text(self) -> str:
        """The operator listener's ``/metrics`` (the public port has none)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            return fetch(url).decode()
        except OSError as exc:
            raise ServerError(f"{url}: {exc}") from None


class Remote(StreamTally):
    """A StreamTally already running, given by URL: not started or stopped here. Its admin
    token creates the benchmark's accounts and flushes; its operator listener (``metrics_url``)
    gives the counters the correctness check compares. Its CPU time and memory are not
    measured (they read as 0: the process is not the benchmark's child)."""

    def __init__(self, url: str, admin_token: str, metrics_url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
            raise ServerError(f"--url must be http://host:port, not {url!r}")
        Server.__init__(self, "streamtally", [], port=parts.port or 80, cpu=None, workdir=Path())
        self.host = parts.hostname
        self.workers = 1
        self.admin_token = admin_token
        self.metrics_url = metrics_url.rstrip("/")
        self.data_dir = Path()

    @property
    def pid(self) -> int:
        raise ServerError("a server given by URL has no process of the benchmark's to profile")

    def start(self, timeout: float = 120.0) -> None:
        try:
            fetch(self.url + "/v1/keys", timeout=10)
        except OSError as exc:
            raise ServerError(f"{self.url}: {exc}") from None

    def stop(self, timeout: float = 60.0) -> None:
        return None

    def alive(self) -> bool:
        return True

    def cpu_seconds(self) -> float:
        return 0.0

    def rss_bytes(self) -> int:
        return 0

    def metrics_text(self) -> str:
        url = self.metrics_url + "/metrics"
        try:
            return fetch(url).decode()
        except OSError as exc:
            raise ServerError(f"{url}: {exc}") from None


def _is_collector(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"collect" in argv


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:  # it exited (the parent starts it again)
        return 0.0


def fetch(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: bytes = resp.read()
        return data
