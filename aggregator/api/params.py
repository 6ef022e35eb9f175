"""Query parameters shared by every customer route: ISO 8601 times in a range ClickHouse holds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from collector.errors import BadRequest

EARLIEST: Final = datetime(1970, 1, 2, tzinfo=UTC)
LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)


def iso(value: datetime, timespec: str = "auto") -> str:
    """``2026-11-24T10:00:00Z``; a naive time (as ClickHouse hands back) is UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(name: str, raw: str | None, default: datetime) -> datetime:
    """An ISO 8601 time; without an offset it is taken as UTC."""
    if raw is None or raw == "":
        return default
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(
            f"parameter {name!r} must be an ISO 8601 time, e.g. 2026-11-24T10:00:00Z", key=name
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise BadRequest(f"parameter {name!r} is out of range", key=name) from None
    if not EARLIEST <= value <= LATEST:
        raise BadRequest(
            f"parameter {name!r} must lie between {iso(EARLIEST)} and {iso(LATEST)}", key=name
        )
    return value
