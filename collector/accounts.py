"""What the collector knows of an account: its embed key, origins, k and whether it exists.

The collector reads accounts through :class:`AccountDirectory`; the aggregator stores them
(in ClickHouse) and implements it. Lookups on the hot path hit an in-memory map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    name: str
    embed_key: str
    origins: tuple[str, ...]  # exact origins ("https://example.com"); "*" allows any
    k: int = 10
    retention_days: int = 762  # 25 months
    deleted: bool = False

    # The origins as compared: lowercased, no trailing slash. Made once, not per report.
    _allowed: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed", frozenset(o.rstrip("/").lower() for o in self.origins))

    def allows_origin(self, origin: str | None) -> bool:
        """Reports without an Origin header (native apps, sendBeacon same-origin) pass."""
        if origin is None or "*" in self._allowed:
            return True
        return origin.rstrip("/").lower() in self._allowed


class AccountDirectory(Protocol):
    def by_embed_key(self, embed_key: str) -> Account | None:
        """The account for a public embed key (deleted accounts included, flagged), or None."""
