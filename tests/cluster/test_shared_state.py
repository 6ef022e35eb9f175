"""What a collector holds of the cluster's state: the owner's viewer secrets (never its own)
and the account directory (a deletion seen once stays, whatever a lagging shard sends)."""

from __future__ import annotations

import time

from collector import linkproto
from collector.accounts import Account
from collector.link import ClusterViewerKeys, LinkDirectory, ReceivedViewerKeys
from collector.ownership import owner
from collector.viewer import ViewerKeys

IP, UA = "203.0.113.9", "Mozilla/5.0 (X11; Linux x86_64)"


def _collector_keys(owners: list[ViewerKeys]) -> ClusterViewerKeys:
    received = [ReceivedViewerKeys(3600, time.time) for _ in owners]
    for shard, keys in zip(received, owners, strict=True):
        process, days = keys.handover_secrets()
        shard.adopt(bytearray(process), {d: bytearray(s) for d, s in days.items()})
    return ClusterViewerKeys(received, 3600, time.time)


def test_two_collectors_compute_the_owners_keys_and_handles() -> None:
    owners = [ViewerKeys(), ViewerKeys()]
    for keys in owners:
        keys.open_days(0)
    first, second = _collector_keys(owners), _collector_keys(owners)
    now = time.time()
    for account in ("acct-a", "acct-b", "acct-c", "acct-d"):
        shard = owners[owner(account, 2)]
        expected = shard.key(account, IP, UA, now)
        assert first.key(account, IP, UA, now) == second.key(account, IP, UA, now) == expected
        assert first.session_handle(account, "sid-1") == shard.session_handle(account, "sid-1")


def test_a_collector_without_the_owners_secret_keys_nobody() -> None:
    # No secret drawn locally: a viewer key under a collector's own secret would make the
    # same person another viewer on every collector (and a secret no owner destroys).
    keys = ReceivedViewerKeys(3600, time.time)
    assert keys.key("acct", IP, UA, time.time()) is None
    assert keys.days() == []
    assert not keys.has_day(time.time())


def test_the_owners_secret_is_destroyed_on_the_collector_too() -> None:
    clock = [1_700_000_000.0]
    owner_keys = ViewerKeys(grace_seconds=60, clock=lambda: clock[0])
    owner_keys.open_days(0)
    process, days = owner_keys.handover_secrets()
    keys = ReceivedViewerKeys(60, lambda: clock[0])
    keys.adopt(bytearray(process), {d: bytearray(s) for d, s in days.items()})
    assert keys.key("acct", IP, UA, clock[0]) is not None
    clock[0] += 86400 + 120  # the day and its grace are over
    keys.rotate()
    assert keys.days() == []
    assert keys.key("acct", IP, UA, clock[0] - 86400) is None


def _row(account: Account) -> list[object]:
    return linkproto.account_row(account)


def test_a_deletion_seen_once_stays_whatever_a_lagging_shard_sends() -> None:
    live = Account("acc1", "n", "ek_1", ("*",))
    deleted = Account("acc1", "n", "ek_1", ("*",), deleted=True)
    directory = LinkDirectory()
    directory.update(5, [_row(live)])
    assert directory.by_embed_key("ek_1") == live
    directory.update(6, [_row(deleted)])  # from the shard that ran the purge
    assert directory.by_embed_key("ek_1").deleted  # type: ignore[union-attr]
    directory.update(6, [_row(live)])  # a shard that has not re-read yet, same version
    assert directory.by_embed_key("ek_1").deleted  # type: ignore[union-attr]
    directory.update(4, [_row(live)])  # an older directory
    assert directory.by_embed_key("ek_1").deleted  # type: ignore[union-attr]


def test_a_purged_account_is_found_by_the_hash_its_tombstone_keeps() -> None:
    import hashlib

    stone = Account("acc2", "", "sha256:" + hashlib.sha256(b"ek_2").hexdigest(), (), deleted=True)
    directory = LinkDirectory()
    directory.update(1, [_row(stone)])
    found = directory.by_embed_key("ek_2")
    assert found is not None
    assert found.deleted
