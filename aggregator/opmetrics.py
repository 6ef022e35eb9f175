"""Operator metrics: what ``GET /metrics`` shows, and the operator-only listener serving it.

Privacy invariant 3 ends: "Operator metrics carry nothing that moves per viewer of one
account and are not public." So ``/metrics`` is not a route of the public app; it is served
by a second aiohttp runner on ``metrics_listen`` (default 127.0.0.1:9464), set up and torn
down in the app's ``cleanup_ctx``. And it does not show the process's metric registry as
is: every metric family is classified in :data:`EXPOSURE`, and the view shows

- ``exact``: request counters and timings summed over every account (no account, stream or
  viewer label), the write side (functions of the k-anonymous rows ClickHouse gets anyway),
  and constants;
- ``coarse``: gauges of in-memory state from before the k-anonymity decision (sessions,
  cells), as :func:`coarse` values: 0 below :data:`COARSE_FLOOR`, then rounded down to two
  significant figures, so that one viewer cannot be seen arriving;
- nothing of a family marked ``withheld``, or of a family not classified at all (fail
  closed: tests/aggregator/test_opmetrics.py lists every family the registry has and fails
  on one that is not in the table).

``_created`` samples (when a counter or one of its labels was first used) are left out.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from collector.errors import ConfigError

log = logging.getLogger("streamtally.metrics")

Kind = Literal["exact", "coarse", "withheld"]

COARSE_FLOOR: Final = 100
COARSE_RULE: Final = (
    f"coarse: 0 below {COARSE_FLOOR}, above rounded down to 2 significant figures, "
    "so that no single viewer moves it"
)

# Labels any exposed sample may carry: each from a small fixed set, none about a client.
ALLOWED_LABELS: Final = frozenset(
    {"reason", "step", "outcome", "quantile", "le", "field", "shard", "generation"}
    | {"implementation", "major", "minor", "patchlevel", "version"}  # python_info
)


@dataclass(frozen=True, slots=True)
class Exposure:
    kind: Kind
    why: str


_LOAD = Exposure("exact", "requests or time, summed over every account; no per-client label")
_WRITTEN = Exposure(
    "exact", "the write side: a function of the k-anonymous rows ClickHouse stores anyway"
)
_CONSTANT = Exposure("exact", "constant while the process runs")
_STATE = Exposure("coarse", "in-memory state from before the k decision: " + COARSE_RULE)

# Metric families by the name the registry gives them (counters without ``_total``).
EXPOSURE: Final[Mapping[str, Exposure]] = {
    # collector: requests through the pipeline
    "streamtally_reports_accepted": _LOAD,
    "streamtally_reports_rejected": _LOAD,
    "streamtally_events_accepted": _LOAD,
    "streamtally_events_dropped": _LOAD,
    "streamtally_pipeline_step_seconds": _LOAD,
    "streamtally_replay_early_rotations": _LOAD,
    "streamtally_ratelimit_evictions": _LOAD,
    "streamtally_dedupe_evictions": _LOAD,
    "streamtally_sessions_refused": _LOAD,
    "streamtally_values_screened": Exposure(
        "exact",
        "client free text reduced to a vocabulary, by field and kind of value (fixed sets), "
        "summed over every account: what a player sends, never what was in it",
    ),
    "process_cpu_seconds": _LOAD,
    "streamtally_gc_pause_seconds": Exposure(
        "exact",
        "how long the cyclic collector held the process, by generation (a fixed set): "
        "time, of the whole heap of every account",
    ),
    # the cluster link (collector and aggregator shard; ``shard``: its index, a fixed set)
    "streamtally_link_up": Exposure("exact", "whether the link to each shard is up"),
    "streamtally_link_buffered_events": _STATE,
    "streamtally_link_events_sent": _LOAD,
    "streamtally_link_batches_resent": _LOAD,
    "streamtally_link_last_down_seconds": Exposure(
        "exact", "how long a link between two nodes was down: nodes, not viewers"
    ),
    "streamtally_link_events": _LOAD,
    "streamtally_link_refused": Exposure(
        "exact", "link connections that did not prove the cluster secret: nodes, not viewers"
    ),
    # aggregator: state held in memory, before k
    "streamtally_active_sessions": _STATE,
    "streamtally_open_cells": _STATE,
    "streamtally_cells_suppressed": Exposure(
        "withheld",
        "counts raw cells below k: it moves when one viewer alone opens a cell, which is "
        "what k-anonymity hides",
    ),
    # aggregator: writing k-anonymous rows
    "streamtally_flush_seconds": _WRITTEN,
    "streamtally_writes": _WRITTEN,
    "streamtally_write_seconds": _WRITTEN,
    "streamtally_spool_refused_batches": _WRITTEN,
    "streamtally_spool_bytes": _WRITTEN,
    "streamtally_spool_batches": _WRITTEN,
    "streamtally_spool_corrupt_records": _WRITTEN,
    "streamtally_audit_failures": Exposure("exact", "customer and admin actions, not viewers"),
    "streamtally_purges": Exposure("exact", "customer and admin actions, not viewers"),
    # the Python process (prometheus_client's default collectors)
    "process_start_time_seconds": _CONSTANT,
    "process_max_fds": _CONSTANT,
    "python_info": _CONSTANT,
    "process_resident_memory_bytes": Exposure(
        "withheld", "grows page by page with sessions and connections; the OS reports it"
    ),
    "process_virtual_memory_bytes": Exposure(
        "withheld", "grows with sessions and connections; the OS reports it"
    ),
    "process_open_fds": Exposure("withheld", "one more per viewer connection; the OS reports it"),
    "python_gc_objects_collected": Exposure("withheld", "allocator noise, of no operator use"),
    "python_gc_objects_uncollectable": Exposure("withheld", "allocator noise, of no operator use"),
    "python_gc_collections": Exposure("withheld", "allocator noise, of no operator use"),
}


def coarse(value: float) -> float:
    """0 below :data:`COARSE_FLOOR`; above, rounded down to two significant figures.

    >>> [coarse(v) for v in (1, 99, 100, 109, 999, 1000, 12_345, 2_000_001)]
    [0.0, 0.0, 100.0, 100.0, 990.0, 1000.0, 12000.0, 2000000.0]
    """
    if value < COARSE_FLOOR:
        return 0.0
    whole = int(value)
    step = 10 ** (len(str(whole)) - 2)
    return float(whole - whole % step)


class OperatorView(Collector):
    """The families of ``registry`` as :data:`EXPOSURE` allows them to be shown."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            exposure = EXPOSURE.get(family.name)
            if exposure is None or exposure.kind == "withheld":
                continue
            help_text = family.documentation
            if exposure.kind == "coarse":
                help_text = f"{help_text} ({COARSE_RULE})"
            shown = Metric(family.name, help_text, family.type, family.unit)
            for s in family.samples:
                if s.name.endswith("_created"):
                    continue
                value = coarse(s.value) if exposure.kind == "coarse" else s.value
                shown.add_sample(s.name, s.labels, value, s.timestamp)
            yield shown


def operator_registry(registry: CollectorRegistry = REGISTRY) -> CollectorRegistry:
    """A registry holding only the operator's view of ``registry``."""
    view = CollectorRegistry(auto_describe=False)
    view.register(OperatorView(registry))
    return view


class OperatorListener:
    """The operator-only HTTP listener: ``GET /metrics`` on ``metrics_listen``.

    ``lifetime`` is a ``cleanup_ctx``: it starts a second runner when the app starts and
    stops it when the app stops. ``before_scrape`` refreshes gauges of state first.
    """

    def __init__(
        self,
        address: tuple[str, int] | None,
        before_scrape: Callable[[], None],
        runner_options: Mapping[str, Any],
    ) -> None:
        self.address = address
        self.bound: tuple[str, int] | None = None
        self._before_scrape = before_scrape
        self._runner_options = dict(runner_options)
        self._registry = operator_registry()

    @property
    def url(self) -> str | None:
        """``http://host:port`` once listening; None when disabled or not started."""
        if self.bound is None:
            return None
        host, port = self.bound
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    async def metrics(self, request: web.Request) -> web.Response:
        self._before_scrape()
        return web.Response(
            body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def lifetime(self, app: web.Application) -> AsyncIterator[None]:
        if self.address is None:
            log.info("no metrics listener (metrics_listen is off)")
            yield
            return
        host, port = self.address
        operator = web.Application()
        operator.router.add_get("/metrics", self.metrics)
        runner = web.AppRunner(operator, **self._runner_options)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                "metrics_listen", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self.bound = (host, int(runner.addresses[0][1]))
        log.debug("operator metrics on %s/metrics", self.url)
        try:
            yield
        finally:
            await runner.cleanup()
            self.bound = None


OPERATOR_LISTENER: Final = web.AppKey("operator_listener", OperatorListener)
