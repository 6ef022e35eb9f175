"""Hot restart in place (``SIGHUP``): new code, same process, same socket, same state.

The running ``streamtally serve`` stops accepting (the listening socket stays open: new
connections wait in its backlog), finishes the requests in flight, writes its whole state
into anonymous memory (``memfd_create``: no file on any disk, gone with its last fd), and
re-executes the installed code in the same process (``execv``: same pid). Two fds cross the
exec, named in the environment variable ``STREAMTALLY_HOT_RESTART``: the listening socket
and the memfd (a cluster shard passes its link listener too: ``link``). The new code reads
the state, zeroes what it read it into, closes the memfd, and goes on counting where the
old code stopped, in the same process run (``part``).

The memfd holds, in this order::

    MAGIC  format:u32  secrets:u32  (day:i64 secret:32 bytes) * secrets  length:u64  payload

The viewer secrets (privacy invariant 2) are written straight from their live buffers and
read into fresh ones; they are never part of the marshal payload (an immutable ``bytes`` that
could not be zeroed). The process secret of the session and client handles has day -1. The
payload is :func:`marshal.dumps` of :func:`aggregator.restart_state.to_state`: plain data,
never pickle. A state the new code cannot take (another format, other fields, damage) is
said in one log line, and the new code starts empty.
"""

from __future__ import annotations

import logging
import marshal
import os
import struct
import sys
import time
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from aiohttp import web

from aggregator.counting.windows import Aggregator
from aggregator.release.ledger import Ledger
from aggregator.restart_state import FORMAT, StateError, from_state, to_state
from aggregator.service import SERVICE
from collector.app import PIPELINE, VIEWERS

__all__ = [
    "ENV",
    "TAKE_ERRORS",
    "Inherited",
    "close_memfd",
    "inherited",
    "log_refused",
    "read_memfd",
    "reexec",
    "take_over",
    "write_memfd",
    "write_state",
]

log = logging.getLogger("streamtally.hot_restart")
# What taking over a state can raise when the code before left one this code cannot read.
TAKE_ERRORS = (StateError, ValueError, KeyError, EOFError, TypeError, OSError)


def log_refused(generation: int, exc: BaseException) -> None:
    """The state cannot be taken: the process starts empty. Names the exception's type
    only (its message could quote the state), unless it is our own StateError."""
    log.error(
        "hot restart %d: the state left by the code before cannot be taken (%s); starting empty",
        generation,
        exc if isinstance(exc, StateError) else type(exc).__name__,
    )


ENV: Final = "STREAMTALLY_HOT_RESTART"
MAGIC: Final = b"STREAMTALLY-HOT-RESTART\0"
MEMFD_NAME: Final = "streamtally-hot-restart"
_HEAD = struct.Struct("<II")  # format, number of secrets
_SECRET = struct.Struct("<q")  # day number (-1: the process secret), then 32 bytes
_LENGTH = struct.Struct("<Q")
SECRET_BYTES: Final = 32
PROCESS_DAY: Final = -1


@dataclass(frozen=True, slots=True)
class Inherited:
    """What the code before a hot restart left to this one."""

    listen_fd: int
    state_fd: int
    generation: int
    link_fd: int | None = None  # a cluster shard's link listener


def inherited() -> Inherited | None:
    """The fds and generation a hot restart passed (the variable is removed: a child
    process must not think it inherited them)."""
    value = os.environ.pop(ENV, None)
    if not value:
        return None
    try:
        fields = dict(part.split("=", 1) for part in value.split(","))
        link = int(fields["link"]) if "link" in fields else None
        return Inherited(
            int(fields["listen"]), int(fields["state"]), int(fields["generation"]), link
        )
    except (KeyError, ValueError):
        log.error("hot restart: %s is malformed; starting as a cold start", ENV)
        return None


# -- the old code: out ----------------------------------------------------------------------------


def write_state(app: web.Application) -> int:
    """Write the app's whole in-memory state into a new memfd; return its fd (at offset 0)."""
    service = app[SERVICE]
    pipeline = app[PIPELINE]
    state = to_state(
        aggregator=service.aggregator,
        ledger=service.ledger,
        service=service.handover_state(),
        deduper=pipeline.deduper,
        replay=pipeline.replay,
        limiters=(pipeline.limiter, pipeline.address_limiter),
    )
    payload = marshal.dumps(state)
    del state
    process, days = app[VIEWERS].handover_secrets()
    return write_memfd(payload, process, days)


def write_memfd(payload: bytes, process: bytearray, days: dict[int, bytearray]) -> int:
    """A new memfd (at offset 0) holding the secrets (from their live buffers) and the
    marshal ``payload``, in the layout above; its fd."""
    fd = os.memfd_create(MEMFD_NAME, 0)  # no MFD_CLOEXEC: it crosses the exec
    try:
        _write_all(fd, MAGIC + _HEAD.pack(FORMAT, 1 + len(days)))
        for day, secret in ((PROCESS_DAY, process), *sorted(days.items())):
            _write_all(fd, _SECRET.pack(day))
            _write_all(fd, secret)  # from the live buffer: no copy of it is made here
        _write_all(fd, _LENGTH.pack(len(payload)))
        _write_all(fd, payload)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def reexec(inherit: Inherited) -> NoReturn:
    """Run the installed code again in this process, handing it the two fds."""
    os.set_inheritable(inherit.listen_fd, True)
    os.set_inheritable(inherit.state_fd, True)
    value = f"listen={inherit.listen_fd},state={inherit.state_fd},generation={inherit.generation}"
    if inherit.link_fd is not None:
        os.set_inheritable(inherit.link_fd, True)
        value += f",link={inherit.link_fd}"
    os.environ[ENV] = value
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, *sys.orig_argv[1:]]
    os.execv(argv[0], argv)


# -- the new code: in -----------------------------------------------------------------------------


def take_over(app: web.Application, inherit: Inherited) -> bool:
    """Load the state the code before left in its memfd into the app (built, not yet
    serving); close the memfd. False (one log line) if it could not be taken: the app then
    starts empty, as after a cold start."""
    service = app[SERVICE]
    service.generation = inherit.generation
    buf = bytearray()
    started = time.perf_counter()
    try:
        buf = _read_all(inherit.state_fd)
        secrets, payload = _split(buf)
        state = marshal.loads(payload)
        pipeline = app[PIPELINE]
        service_state = from_state(
            state,
            aggregator=service.aggregator,
            ledger=service.ledger,
            deduper=pipeline.deduper,
            replay=pipeline.replay,
            limiters=(pipeline.limiter, pipeline.address_limiter),
        )
        del state
        service.take_over(service_state, inherit.generation)
        process = secrets.pop(PROCESS_DAY)
        app[VIEWERS].take_over(process, secrets)
        for secret in (process, *secrets.values()):
            secret[:] = bytes(len(secret))
        log.info(
            "hot restart %d: state taken over (%d sessions, %d bytes) in %.3f s",
            inherit.generation,
            len(service.aggregator._sessions),
            len(buf),
            time.perf_counter() - started,
        )
        return True
    except TAKE_ERRORS as exc:
        log_refused(inherit.generation, exc)
        _reset(app)
        return False
    finally:
        buf[:] = bytes(len(buf))
        try:
            os.ftruncate(inherit.state_fd, 0)
        finally:
            os.close(inherit.state_fd)


def read_memfd(fd: int) -> tuple[bytearray, dict[int, bytearray], Any]:
    """What :func:`write_memfd` wrote: the whole buffer (zero it once done), the secrets
    (fresh buffers: zero them once adopted) and the unmarshalled payload. Raises
    :class:`StateError` (or OSError, EOFError, ValueError) on a state that cannot be read."""
    buf = _read_all(fd)
    try:
        secrets, payload = _split(buf)
        return buf, secrets, marshal.loads(payload)
    except BaseException:
        buf[:] = bytes(len(buf))
        raise


def close_memfd(fd: int) -> None:
    """Empty and close the state's memfd (its pages go back at once)."""
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytearray:
    size = os.fstat(fd).st_size
    buf = bytearray(size)
    view = memoryview(buf)
    done = 0
    while done < size:
        n = os.preadv(fd, [view[done:]], done)
        if n <= 0:
            raise EOFError("the state ends early")
        done += n
    return buf


def _split(buf: bytearray) -> tuple[dict[int, bytearray], memoryview]:
    """The secrets (fresh buffers) and a view of the payload, from the memfd's bytes."""
    view = memoryview(buf)
    at = len(MAGIC)
    if bytes(view[:at]) != MAGIC:
        raise StateError("not a StreamTally state")
    fmt, count = _HEAD.unpack_from(view, at)
    if fmt != FORMAT:
        raise StateError(f"format {fmt}, this code reads format {FORMAT}")
    at += _HEAD.size
    secrets: dict[int, bytearray] = {}
    for _ in range(count):
        (day,) = _SECRET.unpack_from(view, at)
        at += _SECRET.size
        if at + SECRET_BYTES > len(buf):
            raise StateError("damaged (secrets)")
        secrets[day] = bytearray(view[at : at + SECRET_BYTES])
        at += SECRET_BYTES
    if PROCESS_DAY not in secrets:
        raise StateError("damaged (no process secret)")
    (length,) = _LENGTH.unpack_from(view, at)
    at += _LENGTH.size
    if at + length != len(buf):
        raise StateError("damaged (length)")
    return secrets, view[at:]


def _reset(app: web.Application) -> None:
    """Undo a partly taken state: fresh counting objects, as after a cold start."""
    service = app[SERVICE]
    old = service.aggregator
    service.aggregator = Aggregator(
        breakdowns=old.breakdowns, idle_seconds=old.idle_seconds, max_sessions=old.max_sessions
    )
    service.aggregator.resume_until = service.clock() + old.idle_seconds
    service.ledger = Ledger(service._k_of)
