"""`streamtally serve` as a real child process, for tests that need its files, its output,
or a process that must survive what is thrown at it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.chserver import free_port

ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.metrics_port = free_port()  # the operator listener: a port of its own per test
        self.args = args
        self.env = env or {}
        self.pass_fds = pass_fds
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def operator_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    command = "serve"

    def start(self, timeout: float = 60.0) -> None:
        cmd = [
            sys.executable, "-m", "aggregator.cli", self.command,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}", *self.args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=self.pass_fds,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("listening on" in line for line in self.output):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"streamtally {self.command} did not start:\n" + "".join(self.output))

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def admin_token(self) -> str | None:
        for line in self.output:
            match = re.search(r"admin token \(shown once[^:]*\): (\S+)", line)
            if match:
                return match.group(1)
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    def get(self, path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return resp.status, resp.read()

    def metrics(self) -> bytes:
        """``GET /metrics`` of the operator listener (the public port has none)."""
        with urllib.request.urlopen(self.operator_url + "/metrics", timeout=30) as resp:
            body: bytes = resp.read()
            return body
