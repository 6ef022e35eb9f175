"""The cluster link's event batches (version 2, by columns): what the collector encodes the
shard decodes into the same events, strings and dimensions are shared, a malformed batch
is refused, and a peer of another link version cannot even prove the secret."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from collector import linkproto
from collector.handover import UNKNOWN, Dimensions, Event

SECRET = "s" * 64
DESKTOP = Dimensions("DE", "desktop", "Windows", "Chrome", "hls.js")
PHONE = Dimensions("FR", "mobile", "Android", "Chrome", "shaka")


def _events() -> list[Event]:
    return [
        Event("acct-a", 1, 11, 1_700_000_000.25, "live", "ps", DESKTOP, ts_ms=1, seq=0,
              state="s", startup_ms=800),
        Event("acct-a", 1, 11, 1_700_000_001.5, "live", "t", DESKTOP, ts_ms=2, seq=1,
              state="p", bitrate_kbps=3000, buffer_ms=12_000, playhead_ms=5_000, rate=1.0),
        Event("acct-b", 2**63 - 1, 0, 1_700_000_002.0, "vod-7", "rr", PHONE, ts_ms=3,
              response_code=404, ttfb_ms=35, cdn_host="cdn.example", latency_ms=900),
        Event("acct-b", 3, 2**64 - 1, 1_700_000_003.0, UNKNOWN, "e", Dimensions(),
              error_code="MEDIA_ERR", state="f"),
        Event("acct-a", 4, 12, 1_700_000_004.0, "live", "bc", DESKTOP),  # every option None
    ]  # fmt: skip


def _decode(decoder: linkproto.EventDecoder, events: list[Event]) -> list[Event]:
    frame = linkproto.unpack(linkproto.event_frame(7, [linkproto.event_row(e) for e in events]))
    assert frame[:2] == ["ev", 7]
    decoded, accounts = decoder.events(frame[2])
    assert accounts == {e.account_id for e in events}
    return decoded


@pytest.mark.parametrize(
    "events",
    [pytest.param(_events(), id="mixed"), pytest.param(_events()[:1], id="one"),
     pytest.param([], id="empty")],
)  # fmt: skip
def test_a_batch_decodes_to_the_events_encoded(events: list[Event]) -> None:
    assert _decode(linkproto.EventDecoder(), events) == events


def test_strings_and_dimensions_of_every_batch_are_shared() -> None:
    decoder = linkproto.EventDecoder()
    first = _decode(decoder, _events())
    second = _decode(decoder, [Event("acct-a", 9, 9, 1.0, "live", "t", DESKTOP, state="p")])
    assert first[0].account_id is first[1].account_id is second[0].account_id
    assert first[0].stream is second[0].stream
    assert first[0].dims is first[1].dims is second[0].dims


def test_a_batch_is_smaller_than_the_rows_it_carries() -> None:
    rows = [linkproto.event_row(e) for e in _events() * 200]
    by_rows = len(linkproto.pack("ev", 1, rows))
    assert len(linkproto.event_frame(1, rows)) < 0.7 * by_rows


def _batch() -> list[Any]:
    return linkproto.encode_events([linkproto.event_row(e) for e in _events()])


def _set(batch: list[Any], at: int, value: Any) -> list[Any]:
    batch[at] = value
    return batch


def _column(name: str) -> int:  # position in the batch of a named column
    names = (
        "n strings dims account session viewer arrival stream kind dims_at ts_ms seq "
        "state bitrate buffer startup latency playhead rate error response ttfb cdn"
    )
    return names.split().index(name)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda b: b[:-1], id="a-column-missing"),
        pytest.param(lambda b: _set(b, _column("viewer"), b[_column("viewer")][:-1]),
                     id="a-column-short"),
        pytest.param(lambda b: _set(b, 0, 6), id="count-wrong"),
        pytest.param(lambda b: _set(b, _column("account"), [0] * 5), id="account-null"),
        pytest.param(lambda b: _set(b, _column("kind"), [-1] * 5), id="kind-negative"),
        pytest.param(lambda b: _set(b, _column("state"), [-1] * 5), id="state-negative"),
        pytest.param(lambda b: _set(b, _column("stream"), [999] * 5), id="stream-outside"),
        pytest.param(lambda b: _set(b, _column("dims_at"), [9] * 5), id="dims-outside"),
        pytest.param(lambda b: _set(b, 1, ["acct-a", *b[1][1:]]), id="no-null-first"),
        pytest.param(lambda b: _set(b, 1, [None, 5, *b[1][2:]]), id="not-a-string"),
        pytest.param(lambda b: _set(b, 2, [["DE", "desktop"]]), id="dims-short"),
        pytest.param(lambda b: {"n": 5}, id="not-an-array"),
    ],
)  # fmt: skip
def test_a_malformed_batch_is_refused(broken: Any) -> None:
    with pytest.raises((ValueError, TypeError, IndexError)):
        linkproto.EventDecoder().events(broken(_batch()))


def test_a_row_of_another_length_is_not_encoded() -> None:
    with pytest.raises(ValueError, match="24 items"):
        linkproto.encode_events([linkproto.event_row(_events()[0])[:-1]])


def test_a_proof_of_link_version_1_does_not_prove_the_secret_to_version_2() -> None:
    """A collector of the row format (version 1) holding the right secret is refused by a
    version-2 shard at the handshake, before it could send a batch the shard misreads."""
    sn, cn = linkproto.nonce(), linkproto.nonce()
    mac = hmac.new(SECRET.encode(), b"streamtally-link/1 client\0", hashlib.sha256)
    mac.update(sn)
    mac.update(cn)
    assert linkproto.VERSION == 2
    assert not linkproto.proof_ok(SECRET, "client", sn, cn, mac.hexdigest())
    assert linkproto.proof_ok(SECRET, "client", sn, cn, linkproto.proof(SECRET, "client", sn, cn))
