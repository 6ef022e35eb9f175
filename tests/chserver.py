"""A real ClickHouse HTTP server for tests, run from chdb-core's engine.

Run as its own process (the engine can be started once per process)::

    python tests/chserver.py --port 18123 --data /tmp/ch-data

or drive it from a test with :class:`ClickHouseProcess` (start/stop/restart on one port and
data dir, for fault tests); ``tests/conftest.py`` builds its fixtures on that class.

It follows docs/clickhouse.md: write ``config.xml`` into an empty temporary folder and
``chdir`` there (the engine reads ``./config.xml`` at start), keep ``SYSTEM START LISTEN HTTP``
alive inside one long ``chdb._chdb.query`` call on a daemon thread, and let the main thread
wait for SIGTERM/SIGINT, then leave with ``os._exit(0)`` (the engine has no clean shutdown).
The server is clickhouse-local's: user ``default``, no password, so it listens on 127.0.0.1 only.

``--cluster NAME`` also defines a one-node ClickHouse cluster: ``<remote_servers>`` with one
shard whose one replica is this server (native TCP on ``--tcp-port``, listening too), and
``<macros>``. Distributed tables and ``clusterAllReplicas`` work on it; ``ON CLUSTER`` DDL and
Replicated engines do not (the engine has no Keeper and no distributed DDL worker).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

# Keeps the listener alive for a year; max_block_size=1 makes sleepEachRow sleep per row.
SERVE_FOREVER = (
    "SYSTEM START LISTEN HTTP; "
    "SELECT sleepEachRow(1) FROM numbers(31536000) "
    "SETTINGS max_block_size=1, function_sleep_max_microseconds_per_block=0, "
    "max_execution_time=0 FORMAT Null"
)


SERVE_FOREVER_TCP = SERVE_FOREVER.replace("HTTP; ", "HTTP; SYSTEM START LISTEN TCP; ", 1)


def write_config(
    folder: Path, port: int, *, cluster: str | None = None, tcp_port: int | None = None
) -> None:
    """The engine's ./config.xml: HTTP on loopback only (and a one-node ``cluster``)."""
    extra = ""
    if cluster is not None:
        assert tcp_port is not None, "a cluster needs the native TCP port"
        extra = (
            f"<tcp_port>{tcp_port}</tcp_port>"
            f"<remote_servers><{cluster}><shard><replica><host>127.0.0.1</host>"
            f"<port>{tcp_port}</port></replica></shard></{cluster}></remote_servers>"
            "<macros><shard>1</shard><replica>127.0.0.1</replica></macros>"
        )
    (folder / "config.xml").write_text(
        "<clickhouse>"
        "<listen_host>127.0.0.1</listen_host>"
        f"<http_port>{port}</http_port>"
        f"{extra}"
        "</clickhouse>\n",
        encoding="utf-8",
    )


def serve(data_dir: Path, tcp: bool = False) -> None:
    """Run the listener; returns only when the engine stops (it normally never does)."""
    from chdb import _chdb  # imported late: the engine is heavy and starts on first query

    try:
        _chdb.query(SERVE_FOREVER_TCP if tcp else SERVE_FOREVER, "TabSeparated", path=str(data_dir))  # type: ignore[attr-defined]
    except BaseException as exc:  # report and let the main thread exit non-zero
        print(f"chserver: engine stopped: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        stopped.set()


stopped = threading.Event()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True, help="HTTP port on 127.0.0.1")
    parser.add_argument("--data", type=Path, required=True, help="data directory (kept)")
    parser.add_argument("--cluster", help="also define a one-node cluster of this name")
    parser.add_argument("--tcp-port", type=int, help="native TCP port (with --cluster)")
    args = parser.parse_args(argv)

    data_dir: Path = args.data.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    config_dir = Path(tempfile.mkdtemp(prefix="chserver-config-"))
    write_config(config_dir, args.port, cluster=args.cluster, tcp_port=args.tcp_port)
    os.chdir(config_dir)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    threading.Thread(
        target=serve, args=(data_dir, args.cluster is not None), name="clickhouse", daemon=True
    ).start()

    # Wait with a timeout: a bare Event.wait() can keep the signal handlers from running.
    while not stop.is_set() and not stopped.is_set():
        stop.wait(0.2)
    sys.stdout.flush()
    sys.stderr.flush()
    shutil.rmtree(config_dir, ignore_errors=True)
    os._exit(1 if stopped.is_set() and not stop.is_set() else 0)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ClickHouseProcess:
    """This script as a child process: one port and one data dir across start/stop/restart.

    ``url`` is ``http://127.0.0.1:PORT`` (user ``default``, no password). Data written before
    :meth:`stop` is there again after :meth:`start`. The engine's output goes to ``log``.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        log: Path | None = None,
        cluster: str | None = None,
    ) -> None:
        """``cluster``: also a one-node ClickHouse cluster of that name (``--cluster``)."""
        self.data_dir = Path(data_dir)
        self.cluster = cluster
        self.tcp_port = free_port() if cluster is not None else None
        self.port = port if port is not None else free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        self.log = log if log is not None else self.data_dir.with_name(self.data_dir.name + ".log")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and return once ``GET /ping`` answers ``Ok.``."""
        if self.running:
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--port",
                    str(self.port),
                    "--data",
                    str(self.data_dir),
                    *(
                        ["--cluster", self.cluster, "--tcp-port", str(self.tcp_port)]
                        if self.cluster is not None
                        else []
                    ),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"ClickHouse on port {self.port} exited with {self._process.returncode} "
                    f"while starting; see {self.log}"
                )
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ClickHouse on port {self.port} did not answer /ping within {timeout}s")

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:
                return bool(response.read().strip() == b"Ok.")
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; returns once the port is free again."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL at once: a crash, for fault tests."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)


if __name__ == "__main__":
    sys.exit(main())
