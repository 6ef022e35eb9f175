"""The open step: HPKE-sealed report bodies (RFC 9180 base mode, framed like RFC 9458).

A sealed body is ``hdr || enc || ct`` where ``hdr = key_id (1) || kem_id (2) || kdf_id (2)
|| aead_id (2)``, ``enc`` is the sender's 32-byte X25519 ephemeral public key, and ``ct`` is
the single-shot HPKE seal of the CMCD payload with ``info = "streamtally/1 cmcd" || 0x00 ||
hdr`` and empty AAD. This is RFC 9458's Encapsulated Request with StreamTally's own label
(RFC 9458 Section 4.6 asks other uses to pick their own), so an OHTTP client library can
produce it given that label.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from collector.errors import BadRequest
from collector.keys import AEAD_ID, KDF_ID, KEM_ID, NPK, KeyStore

CONTENT_TYPE = "application/vnd.streamtally.sealed"
INFO_PREFIX = b"streamtally/1 cmcd\x00"

HEADER_LEN = 7
ENC_LEN = NPK
_SUITE_IDS = struct.pack("!HHH", KEM_ID, KDF_ID, AEAD_ID)
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


@dataclass(frozen=True, slots=True)
class Opened:
    """A sealed body opened: the CMCD payload, and what the replay check needs."""

    plaintext: bytes
    enc: bytes  # 32 bytes, for the replay check
    key_id: int


def header(key_id: int) -> bytes:
    """The 7-byte header for a key id with StreamTally's one suite."""
    return bytes((key_id,)) + _SUITE_IDS


def open_sealed(body: bytes, keys: KeyStore) -> Opened:
    """Open a sealed report body with the collector's usable keys; BadRequest if it won't."""
    if len(body) < HEADER_LEN + ENC_LEN:
        raise BadRequest("sealed body shorter than header+enc", key="body")
    if body[1:HEADER_LEN] != _SUITE_IDS:
        kem, kdf, aead = struct.unpack_from("!HHH", body, 1)
        raise BadRequest(
            f"unsupported HPKE suite kem=0x{kem:04x} kdf=0x{kdf:04x} aead=0x{aead:04x}",
            key="suite",
        )
    key_id = body[0]
    key = keys.get(key_id)
    if key is None:
        raise BadRequest(f"unknown key_id {key_id}: fetch /v1/keys again", key="key_id")
    try:
        plaintext = _SUITE.decrypt(
            memoryview(body)[HEADER_LEN:], key.private_key, info=INFO_PREFIX + body[:HEADER_LEN]
        )
    except InvalidTag:
        raise BadRequest(
            "cannot open sealed body (wrong key or corrupted)", key="ciphertext"
        ) from None
    return Opened(plaintext, body[HEADER_LEN : HEADER_LEN + ENC_LEN], key_id)


def seal(plaintext: bytes, key_id: int, public_key: X25519PublicKey) -> bytes:
    """Seal a CMCD payload to a collector key (the player's side; for tools and benchmarks)."""
    hdr = header(key_id)
    return hdr + _SUITE.encrypt(plaintext, public_key, info=INFO_PREFIX + hdr)
