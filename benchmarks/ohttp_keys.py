"""Parse an RFC 9458 ``application/ohttp-keys`` body (GET /v1/keys) into key configs.

Section 3.2: a sequence of key configs, each prefixed by its 2-byte length. Section 3.1:
a key config is ``key_id (1) || kem_id (2) || public key (Npk) || cipher suites length (2)
|| (kdf_id (2) || aead_id (2))*``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

KEM_X25519 = 0x0020
NPK = {KEM_X25519: 32}  # the KEMs this client knows the public key length of


class KeysFormatError(ValueError):
    """The body is not a well-formed application/ohttp-keys document."""


@dataclass(frozen=True, slots=True)
class KeyConfig:
    key_id: int
    kem_id: int
    public_key: bytes
    suites: tuple[tuple[int, int], ...]  # (kdf_id, aead_id)

    def x25519(self) -> X25519PublicKey:
        if self.kem_id != KEM_X25519:
            raise KeysFormatError(f"key {self.key_id} is not an X25519 key")
        return X25519PublicKey.from_public_bytes(self.public_key)


def parse_key_config(data: bytes) -> KeyConfig:
    """One key config (Section 3.1), exactly ``data``."""
    if len(data) < 3:
        raise KeysFormatError("key config shorter than key_id and kem_id")
    key_id, kem_id = struct.unpack_from("!BH", data, 0)
    npk = NPK.get(kem_id)
    if npk is None:
        raise KeysFormatError(f"unknown kem_id 0x{kem_id:04x}")
    at = 3 + npk
    if len(data) < at + 2:
        raise KeysFormatError("key config shorter than its public key")
    public_key = data[3:at]
    (suites_len,) = struct.unpack_from("!H", data, at)
    at += 2
    if suites_len % 4 or suites_len == 0 or at + suites_len != len(data):
        raise KeysFormatError("bad cipher suites length")
    suites = tuple(struct.iter_unpack("!HH", data[at : at + suites_len]))
    return KeyConfig(key_id, kem_id, public_key, tuple((k, a) for k, a in suites))


def parse_ohttp_keys(body: bytes) -> list[KeyConfig]:
    """All key configs of the body, in order (the server lists its current key first)."""
    configs: list[KeyConfig] = []
    at = 0
    while at < len(body):
        if at + 2 > len(body):
            raise KeysFormatError("truncated length prefix")
        (length,) = struct.unpack_from("!H", body, at)
        at += 2
        if at + length > len(body):
            raise KeysFormatError("truncated key config")
        configs.append(parse_key_config(body[at : at + length]))
        at += length
    if not configs:
        raise KeysFormatError("no key config")
    return configs
