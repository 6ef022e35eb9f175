"""The cluster's settings (``streamtally aggregate`` and ``streamtally collect``). Declared
once, here; each command reads the ones it needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.ownership import parse_shard
from collector.settings import at_least, listen_address, register, setting

MIN_SECRET_CHARS = 32


def _shard(value: Any) -> str | None:
    try:
        parse_shard(value)
    except ValueError as exc:
        return str(exc)
    return None


def _listen(value: Any) -> str | None:
    return None if value == "" else listen_address(value)


def _addresses(value: Any) -> str | None:
    for item in value:
        problem = listen_address(item)
        if problem or item.strip().lower() == "off":
            return problem or "an aggregator address cannot be off"
    return None


def _url_or_empty(value: Any) -> str | None:
    if value == "" or str(value).startswith(("http://", "https://")):
        return None
    return "must be an http:// or https:// URL"


def _secret(value: Any) -> str | None:
    if value is None or len(value) >= MIN_SECRET_CHARS:
        return None
    return f"must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)"


@register
@dataclass(frozen=True, slots=True)
class ClusterConfig:
    shard: str = setting(
        "0/1", "aggregate: this process counts shard I of M (I from 0)", check=_shard
    )
    listen: str = setting(
        "",
        "aggregate: HOST:PORT where collectors' event streams (the cluster link) arrive",
        check=_listen,
    )
    aggregators: tuple[str, ...] = setting(
        [],
        "comma-separated HOST:PORT of every shard's --listen, in shard order (collect: where "
        "events go; aggregate: where a purge and a flush reach the other shards)",
        check=_addresses,
    )
    cluster_secret: str | None = setting(
        None,
        "secret every node of the cluster shares: it authenticates the links (never sent)",
        check=_secret,
        secret=True,
    )
    link_buffer_events: int = setting(
        200_000,
        "collect: events held in memory per shard while it is slow or away; past it the "
        "shard's accounts get 503 with Retry-After",
        check=at_least(100),
    )
    link_batch_events: int = setting(
        1000, "collect: most events in one link message", check=at_least(1)
    )
    link_window: int = setting(
        8, "collect: link messages sent and not yet acknowledged, per shard", check=at_least(1)
    )
    workers: int = setting(
        1,
        "serve: collector processes sharing the port (SO_REUSEPORT), linked to one "
        "aggregator process over loopback; 1: everything in one process",
        check=at_least(1),
    )
    api_upstream: str = setting(
        "",
        "collect: forward every request that is not a report, a preflight or /v1/keys to "
        "this aggregator URL (serve --workers sets it)",
        check=_url_or_empty,
    )
    accounts_poll_seconds: float = setting(
        1.0,
        "aggregate: how often accounts, tokens and deletions are re-read from ClickHouse and "
        "passed on to the collectors",
        check=at_least(0.05),
    )
