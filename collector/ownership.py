"""Which aggregator shard owns an account: a stable hash every node computes alike.

``owner(account_id, shards)`` is the first 8 bytes of SHA-256 of the account id (UTF-8),
as a big-endian integer, modulo the number of shards. It depends on nothing but the id and
the shard count: no process secret, no Python ``hash()`` (salted per process), no order of
start. Every collector sends an account's events to that shard and every aggregator
agrees which accounts it counts. Changing the number of shards moves accounts (a restart
of the whole cluster, between two UTC days, is the supported way to do it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def owner(account_id: str, shards: int) -> int:
    """The index (0 .. shards - 1) of the shard that owns the account."""
    if shards < 1:
        raise ValueError("shards must be at least 1")
    digest = hashlib.sha256(account_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shards


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (``I/M`` on the command line, I counted from 0)."""

    index: int
    count: int

    def owns(self, account_id: str) -> bool:
        return owner(account_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str) -> Shard:
    """``I/M`` with 0 <= I < M; ValueError otherwise."""
    index_text, sep, count_text = value.strip().partition("/")
    if not sep or not index_text.isdigit() or not count_text.isdigit():
        raise ValueError(f"{value!r} is not I/M (shard I of M, I counted from 0), e.g. 0/2")
    index, count = int(index_text), int(count_text)
    if count < 1 or index >= count:
        raise ValueError(f"{value!r}: I must be below M and M at least 1")
    return Shard(index, count)
