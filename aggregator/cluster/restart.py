"""Hot restart (``SIGHUP``) of the cluster's processes: what each hands to its new code.

The same mechanism as ``serve`` (:mod:`aggregator.hot_restart`): the state goes into
anonymous memory (a memfd, never a file), the viewer secrets beside the marshal payload and
never in it, and the process re-executes in place with its listening sockets.

- ``aggregate`` (a shard): everything that counts — sessions, open and closed windows, the
  release ledger (rounding steps, held-back pools, the dp budget), what it published, the
  owner's dedupe memory, the accounts it has seen deleted — and its viewer secrets (the
  session secret and each day's, which its collectors hold too: the new code must compute
  the same keys). Its collectors' links drop meanwhile; they send again what the shard had
  not acknowledged, and the dedupe handed over here counts each event once.
- ``collect``: the account directory (so that it answers at once, not 404 until a shard
  sends it again), the replay guard, the rate limiters' buckets (keyed by handles under
  its own process secret, handed over beside them) and the events its links still held
  after a short drain (identifier-free rows, as they travel on the link). The owner shards' secrets
  are not handed over: each shard sends them again when the link is back.
"""

from __future__ import annotations

import logging
import marshal
import time
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from aggregator.cluster.link_server import LINK_SERVER
from aggregator.hot_restart import (
    PROCESS_DAY,
    TAKE_ERRORS,
    Inherited,
    close_memfd,
    log_refused,
    read_memfd,
    write_memfd,
)
from aggregator.restart_state import (
    StateError,
    from_state,
    limiters_in,
    replay_in,
    replay_out,
    to_state,
)
from aggregator.service import SERVICE
from collector.app import PIPELINE, VIEWERS
from collector.collect import LINK_SINK, RESTARTS

__all__ = [
    "Loaded",
    "collect_state",
    "load_shard",
    "shard_state",
    "take_over_collect",
    "take_over_shard",
]

log = logging.getLogger("streamtally.hot_restart")

SHARD_ROLE: Final = "shard"
COLLECT_ROLE: Final = "collect"


def _zero(secrets: dict[int, bytearray]) -> None:
    for secret in secrets.values():
        secret[:] = bytes(len(secret))


# -- a shard --------------------------------------------------------------------------------


def shard_state(
    app: web.Application,
    extra: dict[str, Any] | None = None,
    extra_secrets: dict[int, bytearray] | None = None,
) -> int:
    """The shard's whole state in a new memfd; its fd. ``extra``: more plain data for the
    new code (``serve --workers``: its children); ``extra_secrets``: more 32-byte secrets
    beside the payload, under day numbers below -1 (its cluster secret)."""
    service = app[SERVICE]
    link = app[LINK_SERVER]
    state = to_state(
        aggregator=service.aggregator,
        ledger=service.ledger,
        service=service.handover_state(),
        deduper=link.deduper,
        replay=None,
    )
    state["role"] = SHARD_ROLE
    state["shard"] = link.config.shard
    state["gone"] = sorted(link.gone)
    state["extra"] = extra or {}
    payload = marshal.dumps(state)
    del state
    process, days = link.viewers.handover_secrets()
    return write_memfd(payload, process, {**days, **(extra_secrets or {})})


@dataclass
class Loaded:
    """A state read from the memfd, not yet put into an app (zero ``buf`` and the secrets
    once done: :meth:`forget`)."""

    buf: bytearray
    secrets: dict[int, bytearray]
    state: dict[str, Any]

    def forget(self) -> None:
        _zero(self.secrets)
        self.buf[:] = bytes(len(self.buf))


def load_shard(inherit: Inherited) -> Loaded:
    """Read a shard's state from the memfd (closed here); StateError (or OSError, ...) if
    it is not one."""
    buf = bytearray()
    secrets: dict[int, bytearray] = {}
    try:
        buf, secrets, state = read_memfd(inherit.state_fd)
        if not isinstance(state, dict) or state.get("role") != SHARD_ROLE:
            raise StateError("not a shard's state")
        return Loaded(buf, secrets, state)
    except BaseException:
        _zero(secrets)
        buf[:] = bytes(len(buf))
        raise
    finally:
        close_memfd(inherit.state_fd)


def take_over_shard(app: web.Application, inherit: Inherited, loaded: Loaded | None = None) -> bool:
    """Load what the shard's code before left (the app built, not yet serving); False (one
    log line) if it could not be taken: the shard then starts as after a cold start.
    ``loaded``: the state already read (:func:`load_shard`), else it is read here."""
    from aggregator.hot_restart import _reset

    service = app[SERVICE]
    link = app[LINK_SERVER]
    service.generation = inherit.generation
    started = time.perf_counter()
    try:
        if loaded is None:
            loaded = load_shard(inherit)
        state, secrets = loaded.state, loaded.secrets
        if state.get("shard") != link.config.shard:
            raise StateError(f"the state of shard {state.get('shard')}")
        service_state = from_state(
            state,
            aggregator=service.aggregator,
            ledger=service.ledger,
            deduper=link.deduper,
            replay=None,
        )
        gone = {str(account_id) for account_id in state["gone"]}
        service.take_over(service_state, inherit.generation)
        process = secrets.pop(PROCESS_DAY)
        link.viewers.take_over(process, {d: s for d, s in secrets.items() if d >= 0})
        process[:] = bytes(len(process))
        for account_id in gone:
            link.forget(account_id)
        log.info(
            "hot restart %d: state taken over (%d sessions, %d bytes) in %.3f s",
            inherit.generation,
            len(service.aggregator._sessions),
            len(loaded.buf),
            time.perf_counter() - started,
        )
        return True
    except TAKE_ERRORS as exc:
        log_refused(inherit.generation, exc)
        _reset(app)  # the dedupe memory, whole or old, only ever drops repeats
        return False
    finally:
        if loaded is not None:
            loaded.forget()


# -- a collector ----------------------------------------------------------------------------


def collect_state(app: web.Application) -> int:
    """The collector's state in a new memfd (its links stopped); its fd."""
    pipeline = app[PIPELINE]
    sink = app[LINK_SINK]
    state: dict[str, Any] = {
        "role": COLLECT_ROLE,
        "shards": len(sink.links),
        "replay": replay_out(pipeline.replay),
        "limiters": [
            None if lim is None else lim.handover_state()
            for lim in (pipeline.limiter, pipeline.address_limiter)
        ],
        "links": [link.held_rows() for link in sink.links],
        "directory": sink.links[0].directory.handover_state(),  # one, shared by the links
    }
    payload = marshal.dumps(state)
    del state
    process, days = app[VIEWERS].handover_secrets()
    return write_memfd(payload, process, days)


def take_over_collect(app: web.Application, inherit: Inherited) -> bool:
    """Load what the collector's code before left: its links start with the events that
    were still held; False (one log line) if it could not be taken."""
    pipeline = app[PIPELINE]
    sink = app[LINK_SINK]
    app[RESTARTS].generation = inherit.generation
    started = time.perf_counter()
    buf = bytearray()
    secrets: dict[int, bytearray] = {}
    try:
        buf, secrets, state = read_memfd(inherit.state_fd)
        if not isinstance(state, dict) or state.get("role") != COLLECT_ROLE:
            raise StateError("not a collector's state")
        if state["shards"] != len(sink.links):
            raise StateError(f"{state['shards']} shards, now {len(sink.links)}")
        sink.links[0].directory.take_over(*state["directory"])
        replay_in(state["replay"], pipeline.replay)
        limiters_in(state["limiters"], (pipeline.limiter, pipeline.address_limiter))
        process = secrets.pop(PROCESS_DAY)
        app[VIEWERS].take_over(process, secrets)
        process[:] = bytes(len(process))
        held = 0
        for link, rows in zip(sink.links, state["links"], strict=True):
            link.restore(rows)
            held += len(rows)
        log.info(
            "hot restart %d: state taken over (%d held events, %d bytes) in %.3f s",
            inherit.generation,
            held,
            len(buf),
            time.perf_counter() - started,
        )
        return True
    except TAKE_ERRORS as exc:
        log_refused(inherit.generation, exc)
        return False
    finally:
        _zero(secrets)
        buf[:] = bytes(len(buf))
        close_memfd(inherit.state_fd)
