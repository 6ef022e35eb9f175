"""The cluster link's wire format: authentication, events, accounts, viewer secrets.

A link is one WebSocket (binary frames, each an orjson array whose first item names it)
from a collector, or a peer aggregator, to an aggregator shard's ``--listen`` address.

Handshake (mutual, the cluster secret never crosses the wire)::

    shard  -> ["challenge", 1, server_nonce_hex, shard_index, shard_count]
    client -> ["hello", role, client_nonce_hex, HMAC(secret, "client" | sn | cn)_hex]
    shard  -> ["welcome", HMAC(secret, "server" | sn | cn)_hex]       (or close 4401)

HMAC is HMAC-SHA256 with a label per direction, so neither side's answer can be replayed
as the other's; both nonces are 32 random bytes, so no answer of an earlier link is any
use. A session key HMAC(secret, "key" | sn | cn) seals (AES-256-GCM) the one frame that
carries secrets, so the viewer secrets are never in clear on the wire even without TLS.

After it::

    collector -> ["ev", seq, batch]           events by columns (:func:`encode_events`)
    shard     -> ["ack", seq]                 the batch is counted (or was already)
    shard     -> ["accounts", version, [account, ...]]   the whole directory, on change
    shard     -> ["secrets", sealed_hex]      the shard's session secret and day secrets
    shard     -> ["restarting", seconds]      a hot restart: the link closes now and the
                                              shard is back within about that long
    peer      -> ["call", id, name, args]     flush / purge on the owner (aggregators only)
    shard     -> ["reply", id, status, body]
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import fields
from datetime import date
from typing import Any, cast

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from collector.accounts import Account
from collector.handover import Dimensions, Event

VERSION = 2  # 2: event batches by columns (1: by rows)
PATH = "/v1/link"
NONCE_BYTES = 32
AUTH_FAILED = 4401  # WebSocket close code: the peer did not prove the cluster secret
ROLES = ("collector", "peer")
_LABEL = b"streamtally-link/2 "  # a proof of one version fails in another


def nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def proof(secret: str, label: str, server_nonce: bytes, client_nonce: bytes) -> str:
    """HMAC-SHA256 over the two nonces under the cluster secret, labelled per use."""
    mac = hmac.new(secret.encode("utf-8"), _LABEL + label.encode() + b"\0", hashlib.sha256)
    mac.update(server_nonce)
    mac.update(client_nonce)
    return mac.hexdigest()


def proof_ok(secret: str, label: str, sn: bytes, cn: bytes, claimed: object) -> bool:
    return isinstance(claimed, str) and hmac.compare_digest(proof(secret, label, sn, cn), claimed)


def session_key(secret: str, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return bytes.fromhex(proof(secret, "key", server_nonce, client_nonce))


def seal(key: bytes, plaintext: bytes) -> str:
    iv = os.urandom(12)
    return (iv + AESGCM(key).encrypt(iv, plaintext, b"secrets")).hex()


def unseal(key: bytes, sealed_hex: str) -> bytes:
    """Raises ValueError (or cryptography's InvalidTag) if the frame was not sealed by the
    other end of this link."""
    raw = bytes.fromhex(sealed_hex)
    return AESGCM(key).decrypt(raw[:12], raw[12:], b"secrets")


def pack(*items: Any) -> bytes:
    return orjson.dumps(items)


def unpack(data: bytes | str) -> list[Any]:
    value = orjson.loads(data)
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise ValueError("a link frame is a non-empty array whose first item is its name")
    return value


# -- events --------------------------------------------------------------------------------

# An event batch travels by columns, not by rows: one orjson array per field, so that the
# shard decodes a batch in a few C-level passes (orjson, ``map``) instead of one Python
# call per event. Strings (account ids, streams, kinds, states, error codes, CDN hosts) go
# once per batch in a table and the columns carry their positions; the five dimensions go
# as a table of distinct 5-tuples. Position 0 of the string table is null.
#
#   batch = [n, strings, dims, account, session, viewer, arrival, stream, kind, dims_at,
#            ts_ms, seq, state, bitrate_kbps, buffer_ms, startup_ms, latency_ms,
#            playhead_ms, rate, error_code, response_code, ttfb_ms, cdn_host]
#
# (account, stream, kind, state, error_code, cdn_host: positions in ``strings``; dims_at:
# positions in ``dims``; the rest: the values, null for None.)

Row = tuple[Any, ...]
ROW_ITEMS = 24
_STRING_COLUMNS = (0, 4, 5, 13, 20, 23)  # row positions of the interned string fields
_COLUMNS = 20  # columns after n, strings and dims


def event_row(ev: Event) -> Row:
    """An event as a flat tuple (the collector queues these; :func:`encode_events` makes a
    batch of them)."""
    d = ev.dims
    return (
        ev.account_id, ev.session, ev.viewer, ev.arrival, ev.stream, ev.kind,
        d.country, d.device, d.os, d.browser, d.player,
        ev.ts_ms, ev.seq, ev.state, ev.bitrate_kbps, ev.buffer_ms, ev.startup_ms,
        ev.latency_ms, ev.playhead_ms, ev.rate, ev.error_code, ev.response_code,
        ev.ttfb_ms, ev.cdn_host,
    )  # fmt: skip


def encode_events(rows: Sequence[Row]) -> list[Any]:
    """A batch of rows by columns, strings and dimensions once each (see above)."""
    if not rows:
        return [0, [None], [], *([] for _ in range(_COLUMNS))]
    cols = list(zip(*rows, strict=True))
    if len(cols) != ROW_ITEMS:
        raise ValueError(f"an event row has {ROW_ITEMS} items")
    strings: dict[str | None, int] = {None: 0}
    setdefault = strings.setdefault

    def positions(col: Sequence[str | None]) -> list[int]:
        return [setdefault(v, len(strings)) for v in col]

    dims: dict[tuple[str, ...], int] = {}
    dims_at = [
        dims.setdefault(key, len(dims))
        for key in zip(cols[6], cols[7], cols[8], cols[9], cols[10], strict=True)
    ]
    account, stream, kind, state, error, cdn = (positions(cols[i]) for i in _STRING_COLUMNS)
    return [
        len(rows), list(strings), list(dims),
        account, cols[1], cols[2], cols[3], stream, kind, dims_at,
        cols[11], cols[12], state, cols[14], cols[15], cols[16], cols[17], cols[18], cols[19],
        error, cols[21], cols[22], cdn,
    ]  # fmt: skip


def event_frame(seq: int, rows: Sequence[Row]) -> bytes:
    return pack("ev", seq, encode_events(rows))


class EventDecoder:
    """Batches back into events, a batch at a time. Equal dimensions share one object and
    equal strings one string (as in one process: less memory for what the shard keeps)."""

    def __init__(self) -> None:
        self._dims: dict[tuple[str, ...], Dimensions] = {}
        self._strings: dict[str, str] = {}

    def _string(self, value: object) -> str:
        if type(value) is not str:
            raise TypeError("a string table holds strings (and null first)")
        found = self._strings.get(value)
        if found is None:
            if len(self._strings) > 100_000:
                self._strings.clear()
            found = self._strings[value] = value
        return found

    def _dimensions(self, value: object) -> Dimensions:
        if not isinstance(value, list) or len(value) != 5:
            raise ValueError("dimensions are 5 strings")
        key = tuple(map(self._string, value))
        dims = self._dims.get(key)
        if dims is None:
            if len(self._dims) > 100_000:
                self._dims.clear()
            dims = self._dims[key] = Dimensions(*key)
        return dims

    def events(self, batch: list[Any]) -> tuple[list[Event], set[str]]:
        """The batch's events and the set of their account ids. Raises ValueError,
        TypeError or IndexError for a batch that is not one."""
        if not isinstance(batch, list) or len(batch) != 3 + _COLUMNS:
            raise ValueError(f"an event batch has {3 + _COLUMNS} items")
        n, table, dim_table, *cols = batch
        if not isinstance(table, list) or not table or table[0] is not None:
            raise ValueError("a string table starts with null")
        if not isinstance(dim_table, list) or any(
            not isinstance(c, list) or len(c) != n for c in cols
        ):
            raise ValueError(f"every column of an event batch has {n} items")
        strings = [None, *map(self._string, table[1:])]
        text = strings.__getitem__
        dims = list(map(self._dimensions, dim_table)).__getitem__
        account, session, viewer, arrival, stream, kind, dims_at, ts_ms, seq, state = cols[:10]
        bitrate, buffer, startup, latency, playhead, rate, error, response, ttfb, cdn = cols[10:]
        if min(min(c, default=1) for c in (account, stream, kind)) < 1 or (
            min(min(c, default=0) for c in (state, error, cdn, dims_at)) < 0
        ):
            raise ValueError(
                "a position in a table is not negative (nor null for a string that is never None)"
            )
        accounts = cast("set[str]", set(map(text, set(account))))  # never null: checked
        events = list(
            map(
                Event,
                map(text, account), session, viewer, arrival, map(text, stream),
                map(text, kind), map(dims, dims_at), ts_ms, seq, map(text, state), bitrate,
                buffer, startup, latency, playhead, rate, map(text, error), response, ttfb,
                map(text, cdn),
            )
        )  # fmt: skip
        return events, accounts


# -- accounts ------------------------------------------------------------------------------

_ACCOUNT_FIELDS = tuple(f.name for f in fields(Account) if not f.name.startswith("_"))


def account_row(account: Account) -> list[Any]:
    values: list[Any] = []
    for name in _ACCOUNT_FIELDS:
        value = getattr(account, name)
        values.append(value.isoformat() if isinstance(value, date) else value)
    return values


def account_from_row(row: list[Any]) -> Account:
    if len(row) != len(_ACCOUNT_FIELDS):
        raise ValueError(f"an account row has {len(_ACCOUNT_FIELDS)} items")
    values = dict(zip(_ACCOUNT_FIELDS, row, strict=True))
    for name in ("origins", "streams", "stream_patterns"):
        values[name] = tuple(values[name])
    if values["next_k_from"] is not None:
        values["next_k_from"] = date.fromisoformat(values["next_k_from"])
    return Account(**values)


# -- viewer secrets ------------------------------------------------------------------------


def secrets_plaintext(process: bytearray, days: dict[int, bytearray]) -> bytes:
    return orjson.dumps(
        {"process": process.hex(), "days": {str(d): s.hex() for d, s in days.items()}}
    )


def secrets_from_plaintext(plaintext: bytes) -> tuple[bytearray, dict[int, bytearray]]:
    value = orjson.loads(plaintext)
    process = bytearray.fromhex(value["process"])
    days = {int(d): bytearray.fromhex(s) for d, s in value["days"].items()}
    return process, days
