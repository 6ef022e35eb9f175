"""(being written) The audit log: every customer read, export, purge and admin action."""

from __future__ import annotations

from typing import Any

from aiohttp import web


async def record(
    request: web.Request, account_id: str, action: str, summary: dict[str, Any]
) -> None:
    """Write one audit entry: time, account, actor (token prefix or "admin"), action, summary.

    ``summary`` holds the request's parameters (never viewer data). Implemented by the
    governance work; until then a no-op so callers can be written against it.
    """
