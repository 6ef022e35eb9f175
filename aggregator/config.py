"""The aggregator's settings: time, counting, storage and customer access. Declared once, here."""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.storage.cluster_schema import check_cluster_name
from collector.settings import at_least, one_of, register, setting

BREAKDOWN_DIMENSIONS = ("country", "device", "os", "browser", "player")


def _breakdowns(value: tuple[str, ...]) -> str | None:
    unknown = [v for v in value if v not in BREAKDOWN_DIMENSIONS]
    if unknown:
        return f"unknown dimension(s) {', '.join(unknown)}; choose from {BREAKDOWN_DIMENSIONS}"
    return None


def _url(value: str | None) -> str | None:
    if value is None or value.startswith(("http://", "https://")):
        return None
    return "must be an http:// or https:// URL"


@register
@dataclass(frozen=True, slots=True)
class AggregatorConfig:
    clickhouse_url: str | None = setting(
        None,
        "a ClickHouse server (http[s]://user:password@host:port) instead of the embedded store",
        check=_url,
        secret=True,
    )
    database: str = setting("streamtally", "ClickHouse database")
    clickhouse_cluster: str = setting(
        "",
        "a ClickHouse cluster of <remote_servers> to spread the schema over: replicated "
        "tables ON CLUSTER and Distributed tables sharded by account (needs clickhouse_url)",
        check=check_cluster_name,
    )
    admin_token: str | None = setting(
        None,
        "admin API token; generated and printed once if absent, stored only as a hash",
        secret=True,
    )
    default_k: int = setting(
        10, "k of new accounts: fewest distinct viewers a published cell has", check=at_least(2)
    )
    breakdowns: tuple[str, ...] = setting(
        list(BREAKDOWN_DIMENSIONS), "dimensions each stream is broken down by", check=_breakdowns
    )
    flush_seconds: float = setting(
        10.0, "how often finished minute cells are written", check=at_least(0.05)
    )
    provisional_seconds: float = setting(
        300.0, "how often open hour and day cells are rewritten", check=at_least(0.05)
    )
    retention_days: int = setting(
        762, "default retention of aggregates (25 months)", check=at_least(1)
    )
    spool_max_bytes: int = setting(
        256 * 1024 * 1024,
        "size limit of the on-disk spool used while ClickHouse is down",
        check=at_least(4096),
    )
    audit_retention_days: int = setting(400, "days audit log rows are kept", check=at_least(1))
    log_level: str = setting(
        "info", "logging level", check=one_of("debug", "info", "warning", "error")
    )
