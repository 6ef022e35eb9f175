"""Start-up checks of settings against the machine, before anything starts: the listen
addresses resolve and are free, the data dir is a folder that can be written.

Each failure is a :class:`ConfigError` naming the setting and the cause in one line, so that
``streamtally`` can say it and exit with status 2 (no traceback, nothing half started).
Messages name the operator's own settings (host, port, folder), never a client's data.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from collector.errors import ConfigError


def data_dir(path: Path, setting: str = "data_dir") -> Path:
    """The data dir, created if missing; ConfigError unless it is a folder we can write."""
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == path else f"is under {parent}, which is a file"
            raise ConfigError(setting, f"{path} {what}, not a folder; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(setting, f"cannot create the folder {path}: {_cause(exc)}") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ConfigError(
            setting, f"{path} is not writable ({_cause(exc)}); give a folder this user can write"
        ) from None
    return path


def listen_address(host: str, port: int, *, host_setting: str, port_setting: str) -> None:
    """ConfigError unless ``host`` resolves to an address of this machine where ``port`` is
    free (port 0: any free port, only the host is checked)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(
            host_setting, f"cannot resolve the host {host!r}: {exc.strerror}"
        ) from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            try:
                probe.bind(address)
            except OSError as exc:
                raise bind_error(exc, host, port, host_setting, port_setting) from None


def distinct_listeners(host: str, port: int, metrics: tuple[str, int] | None) -> None:
    """ConfigError if the operator-only metrics listener would be the public one (port 0 on
    both: each gets a free port of its own)."""
    if port and metrics == (host, port):
        raise ConfigError("metrics_listen", f"must not be the public host and port {host}:{port}")


def bind_error(
    exc: OSError, host: str, port: int, host_setting: str, port_setting: str
) -> ConfigError:
    """The ConfigError for a failed bind of ``host:port``, naming the setting at fault."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            port_setting,
            f"{where} is already in use by another program; stop it or choose another port",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            host_setting, f"{host} is not an address of this machine ({_cause(exc)})"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            port_setting, f"not allowed to listen on {where}: ports below 1024 need privileges"
        )
    return ConfigError(port_setting, f"cannot listen on {where}: {_cause(exc)}")


def _cause(exc: OSError) -> str:
    return exc.strerror or os.strerror(exc.errno or 0) or type(exc).__name__
