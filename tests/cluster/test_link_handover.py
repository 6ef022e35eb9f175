"""The collector's link across a hot restart, in one process: what it holds goes to the new
code whole and in order, the account directory survives (a deleted account stays deleted),
and a shard that announced a hot restart has its events held rather than refused, for as
long as it said and no longer."""

from __future__ import annotations

import asyncio
import marshal
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from aggregator import hot_restart
from collector import linkproto
from collector.accounts import Account
from collector.link import MAX_RESTART_SECONDS, LinkDirectory, ReceivedViewerKeys, ShardLink
from collector.linkconfig import ClusterConfig

CONFIG = ClusterConfig(aggregators=("127.0.0.1:1",), cluster_secret="s" * 64)


class FakeSocket:
    """Binary frames as the shard's WebSocket would deliver them, then the end."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames

    def __aiter__(self) -> AsyncIterator[aiohttp.WSMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[aiohttp.WSMessage]:
        for frame in self.frames:
            yield aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, frame, None)


def link(limit: int = 100) -> ShardLink:
    viewers = ReceivedViewerKeys(3600, time.time)
    today = int(time.time() // 86_400)
    viewers.adopt(bytearray(32), {today: bytearray(b"\1" * 32)})
    made = ShardLink(0, "127.0.0.1:1", CONFIG, LinkDirectory(), viewers)
    made.limit = limit
    return made


def row(n: int) -> list[object]:
    return ["acc", n, n, 1.0, "s", "t", "DE", "desktop", "Linux", "Chrome", "hls.js", n]


async def test_held_events_cross_in_order_and_wait_for_no_report() -> None:
    before = link()
    before.push([row(1), row(2)])
    before.push([row(3)])
    before.inflight = {7: [row(1)], 6: [row(0)]}  # sent, not acknowledged (6 before 7)
    before.pending.popleft()
    held = before.held_rows()
    assert held == [row(0), row(1), row(2), row(3)]
    after = link()
    after.restore(marshal.loads(marshal.dumps(held)))  # as it crosses the exec
    assert list(after.pending) == held
    assert after.held == len(held)
    assert not after.waiters  # answered before the restart: nobody waits on them


def test_the_directory_crosses_and_a_deletion_stays() -> None:
    directory = LinkDirectory()
    live = Account("acc_a", "a", "ek_a", ("*",))
    gone = Account("acc_b", "b", "ek_b", ("*",), deleted=True)
    directory.update(3, [linkproto.account_row(live), linkproto.account_row(gone)])
    after = LinkDirectory()
    after.take_over(*marshal.loads(marshal.dumps(directory.handover_state())))
    assert after.by_embed_key("ek_a") == live
    found = after.by_embed_key("ek_b")
    assert found is not None
    assert found.deleted
    # an older directory from a shard that has not seen the deletion does not revive it
    after.update(
        2,
        [linkproto.account_row(live), linkproto.account_row(Account("acc_b", "b", "ek_b", ("*",)))],
    )
    found = after.by_embed_key("ek_b")
    assert found is not None
    assert found.deleted


@pytest.mark.parametrize(
    ("announced", "wait", "held_events", "accepting"),
    [
        pytest.param(None, 0.0, 0, False, id="down-unannounced-refused"),
        pytest.param(10.0, 0.0, 0, True, id="restarting-held"),
        pytest.param(0.05, 0.1, 0, False, id="restarting-past-what-it-said-refused"),
        pytest.param(10.0, 0.0, 100, False, id="restarting-buffer-full-refused"),
        pytest.param(1e9, 0.0, 0, True, id="restarting-forever-believed-30s"),
    ],
)
async def test_a_shard_in_an_announced_hot_restart_has_its_events_held(
    announced: float | None, wait: float, held_events: int, accepting: bool
) -> None:
    shard = link(limit=100)
    shard.held = held_events
    if announced is not None:  # the shard's last frame before it closes the link
        await shard._receive(FakeSocket([linkproto.pack("restarting", announced)]), b"")  # type: ignore[arg-type]
    await asyncio.sleep(wait)
    assert shard.up is False
    assert shard.accepting() is accepting
    if announced == 1e9:
        assert shard.back_by <= time.monotonic() + MAX_RESTART_SECONDS


def test_the_inherited_fds_name_the_link_listener(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hot_restart.ENV, "listen=5,state=6,generation=2,link=7")
    assert hot_restart.inherited() == hot_restart.Inherited(5, 6, 2, 7)
    monkeypatch.setenv(hot_restart.ENV, "listen=5,state=6,generation=2")
    assert hot_restart.inherited() == hot_restart.Inherited(5, 6, 2, None)
