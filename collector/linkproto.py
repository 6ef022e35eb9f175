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

    collector -> ["ev", seq, [row, ...]]      events (rows: :func:`event_row`)
    shard     -> ["ack", seq]                 the batch is counted (or was already)
    shard     -> ["accounts", version, [account, ...]]   the whole directory, on change
    shard     -> ["secrets", sealed_hex]      the shard's session secret and day secrets
    peer      -> ["call", id, name, args]     flush / purge on the owner (aggregators only)
    shard     -> ["reply", id, status, body]
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import fields
from datetime import date
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from collector.accounts import Account
from collector.handover import Dimensions, Event

VERSION = 1
PATH = "/v1/link"
NONCE_BYTES = 32
AUTH_FAILED = 4401  # WebSocket close code: the peer did not prove the cluster secret
ROLES = ("collector", "peer")
_LABEL = b"streamtally-link/1 "


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


def event_row(ev: Event) -> list[Any]:
    """An event as a flat array (the field names are not sent: positions are the format)."""
    d = ev.dims
    return [
        ev.account_id, ev.session, ev.viewer, ev.arrival, ev.stream, ev.kind,
        d.country, d.device, d.os, d.browser, d.player,
        ev.ts_ms, ev.seq, ev.state, ev.bitrate_kbps, ev.buffer_ms, ev.startup_ms,
        ev.latency_ms, ev.playhead_ms, ev.rate, ev.error_code, ev.response_code,
        ev.ttfb_ms, ev.cdn_host,
    ]  # fmt: skip


class EventDecoder:
    """Rows back into events; equal dimensions share one object (as in one process)."""

    def __init__(self) -> None:
        self._dims: dict[tuple[str, ...], Dimensions] = {}

    def event(self, row: list[Any]) -> Event:
        if len(row) != 24:
            raise ValueError("an event row has 24 items")
        key = (row[6], row[7], row[8], row[9], row[10])
        dims = self._dims.get(key)
        if dims is None:
            if len(self._dims) > 100_000:
                self._dims.clear()
            dims = self._dims[key] = Dimensions(*key)
        return Event(
            row[0], int(row[1]), int(row[2]), float(row[3]), row[4], row[5], dims,
            *row[11:],
        )  # fmt: skip


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
