"""Every node computes the same owner for an account; the shards share the accounts out."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from collector.ownership import Shard, owner, parse_shard

ROOT = Path(__file__).resolve().parents[2]


def test_the_owner_is_sha256_of_the_id_modulo_the_shards() -> None:
    # The documented rule (docs/design.md), so that any tool can compute it too.
    for account_id in ("a", "account-1", "Zürich"):
        first8 = hashlib.sha256(account_id.encode()).digest()[:8]
        assert owner(account_id, 7) == int.from_bytes(first8, "big") % 7
    assert owner("a", 1) == 0


def test_another_process_with_another_hash_seed_agrees() -> None:
    ids = [f"acct-{i}" for i in range(50)]
    code = (
        "import sys; from collector.ownership import owner; "
        "print(','.join(str(owner(a, 3)) for a in sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, *ids], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ",".join(str(owner(a, 3)) for a in ids)


@pytest.mark.parametrize("shards", [2, 3, 5], ids=["2-shards", "3-shards", "5-shards"])
def test_accounts_are_shared_out_evenly_and_each_has_one_owner(shards: int) -> None:
    ids = [f"{i:08x}-account" for i in range(3000)]
    counts = Counter(owner(a, shards) for a in ids)
    assert set(counts) == set(range(shards))
    assert max(counts.values()) < 1.2 * len(ids) / shards
    nodes = [Shard(i, shards) for i in range(shards)]
    assert all(sum(node.owns(a) for node in nodes) == 1 for a in ids)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", Shard(0, 1)), ("1/2", Shard(1, 2)), (" 2/3 ", Shard(2, 3))],
    ids=["single", "second-of-two", "spaces"],
)
def test_shard_parses(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "0/0", "-1/2", "1/-2"])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="I"):
        parse_shard(text)
