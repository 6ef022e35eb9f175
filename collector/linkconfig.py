"""The cluster's settings (``streamtally aggregate`` and ``streamtally collect``). Declared
once, here; each command reads the ones it needs."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
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
    cluster_tls_cert: Path | None = setting(
        None,
        "PEM certificate (chain) this node shows on the cluster link: the shard's server "
        "certificate, a collector's client certificate",
    )
    cluster_tls_key: Path | None = setting(None, "PEM private key of --cluster-tls-cert")
    cluster_tls_ca: Path | None = setting(
        None,
        "PEM CA that signs the other end's certificate; set, the link runs over TLS (a shard "
        "then requires a client certificate signed by it)",
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


def tls_problem(config: ClusterConfig) -> tuple[str, str] | None:
    """(setting, cause) if the TLS settings do not go together."""
    if (config.cluster_tls_cert is None) != (config.cluster_tls_key is None):
        return "cluster_tls_key", "--cluster-tls-cert and --cluster-tls-key go together"
    if config.cluster_tls_cert is not None and config.cluster_tls_ca is None:
        return "cluster_tls_ca", "needed with --cluster-tls-cert: the CA of the other end"
    return None


def server_tls(config: ClusterConfig) -> ssl.SSLContext | None:
    """A shard's TLS context (client certificates required), or None for plain TCP."""
    if config.cluster_tls_ca is None or config.cluster_tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.cluster_tls_ca)
    context.load_cert_chain(config.cluster_tls_cert, config.cluster_tls_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def client_tls(config: ClusterConfig) -> ssl.SSLContext | None:
    """A link client's TLS context (the shard's name checked), or None for plain TCP."""
    if config.cluster_tls_ca is None:
        return None
    context = ssl.create_default_context(cafile=config.cluster_tls_ca)
    if config.cluster_tls_cert is not None:
        context.load_cert_chain(config.cluster_tls_cert, config.cluster_tls_key)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def link_url(address: str, config: ClusterConfig) -> str:
    from collector.linkproto import PATH

    return f"{'https' if config.cluster_tls_ca else 'http'}://{address}{PATH}"
