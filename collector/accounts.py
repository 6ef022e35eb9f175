"""What the collector knows of an account: its embed key, origins, declared streams, k and
whether it exists.

The collector reads accounts through :class:`AccountDirectory`; the aggregator stores them
(in ClickHouse) and implements it. Lookups on the hot path hit an in-memory map.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

# In a declared stream pattern, ``*`` stands for any run and ``?`` for one character of
# these: never ``@ : / ? & = .`` or a space, so a pattern cannot vouch for an e-mail
# address, an IP address or a URL put where the publisher expects a number.
_WILDCARD_CHARS = "[A-Za-z0-9_-]"


def _pattern_regex(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    parts = []
    for pattern in patterns:
        pieces = (
            f"{_WILDCARD_CHARS}*" if c == "*" else _WILDCARD_CHARS if c == "?" else re.escape(c)
            for c in pattern
        )
        parts.append("".join(pieces))
    return re.compile("|".join(f"(?:{p})" for p in parts))


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    name: str
    embed_key: str
    origins: tuple[str, ...]  # exact origins ("https://example.com"); "*" allows any
    k: int = 10
    retention_days: int = 762  # 25 months
    deleted: bool = False
    # Stream names (CMCD cid) the publisher declares: exact names, and glob patterns
    # (``match-*``). A declared name is kept as sent; others pass the identifier screen.
    streams: tuple[str, ...] = ()
    stream_patterns: tuple[str, ...] = ()
    # Privacy mode (the aggregator's concern): "k" (k-anonymity) or "dp" (noise on every
    # released part, epsilon per viewer-day), applying from the UTC day privacy_from
    # (unix seconds of its start).
    privacy: str = "k"
    epsilon_per_day: float = 0.0
    delta: float = 0.0
    privacy_from: int = 0
    # A change of k waits for the next UTC day, so that no window is released under two k:
    # ``next_k`` (0: none) is the k from ``next_k_from`` on; ``k`` is the k before that day.
    next_k: int = 0
    next_k_from: date | None = None

    # The origins as compared: lowercased, no trailing slash. Made once, not per report.
    _allowed: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _streams: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _patterns: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allowed", frozenset(o.rstrip("/").lower() for o in self.origins))
        object.__setattr__(self, "_streams", frozenset(self.streams))
        object.__setattr__(self, "_patterns", _pattern_regex(self.stream_patterns))

    def k_on(self, day: date) -> int:
        """The k in force on a UTC day: every window of that day is released under it."""
        if self.next_k and self.next_k_from is not None and day >= self.next_k_from:
            return self.next_k
        return self.k

    def declares_stream(self, name: str) -> bool:
        """Whether the publisher declared this stream name (exactly, or by a pattern)."""
        if name in self._streams:
            return True
        return self._patterns is not None and self._patterns.fullmatch(name) is not None

    def allows_origin(self, origin: str | None) -> bool:
        """Reports without an Origin header (native apps, sendBeacon same-origin) pass."""
        if origin is None or "*" in self._allowed:
            return True
        return origin.rstrip("/").lower() in self._allowed


class AccountDirectory(Protocol):
    def by_embed_key(self, embed_key: str) -> Account | None:
        """The account for a public embed key (deleted accounts included, flagged), or None."""
