"""Opening sealed reports: HPKE base mode framed like an RFC 9458 encapsulated request."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.errors import BadRequest
from collector.keys import KeyStore
from collector.sealed import CONTENT_TYPE, INFO_PREFIX, open_sealed, seal

OVERLAP = 600
T0 = 1_700_000_000.0
PAYLOAD = (
    b'e="ps",sid="6e2fb550-c457-11e9-bb97-0800200c9a66",cid="movie-7",sta="p",ts=1700000000000\n'
    b'e="t",sid="6e2fb550-c457-11e9-bb97-0800200c9a66",cid="movie-7",br=3200,bl=8000\n'
)

# The suite, written out from RFC 9180 Section 7 by hand (not taken from the module).
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys(tmp_path: Path, clock: FakeClock) -> KeyStore:
    return KeyStore.open(tmp_path / "keys", OVERLAP, clock)


def independent_seal(
    plaintext: bytes,
    key_id: int,
    public_key: X25519PublicKey,
    *,
    kem: int = 0x0020,
    kdf: int = 0x0001,
    aead: int = 0x0001,
    info: bytes | None = None,
) -> bytes:
    """The wire format built by hand, as a player would: hdr || enc || ct."""
    hdr = (
        bytes([key_id]) + kem.to_bytes(2, "big") + kdf.to_bytes(2, "big") + aead.to_bytes(2, "big")
    )
    if info is None:
        info = b"streamtally/1 cmcd" + b"\x00" + hdr
    return hdr + SUITE.encrypt(plaintext, public_key, info=info)


def public(keys: KeyStore) -> tuple[int, X25519PublicKey]:
    key = keys.current()
    return key.key_id, key.private_key.public_key()


def assert_bad_request(body: bytes, keys: KeyStore, detail: str, key: str) -> BadRequest:
    with pytest.raises(BadRequest) as excinfo:
        open_sealed(body, keys)
    assert excinfo.value.detail == detail
    assert excinfo.value.extra == {"key": key}
    assert excinfo.value.problem()["status"] == 400
    return excinfo.value


# --- known answers ---


def test_constants_match_the_wire_protocol() -> None:
    assert CONTENT_TYPE == "application/vnd.streamtally.sealed"
    assert INFO_PREFIX == b"streamtally/1 cmcd\x00"


def test_cryptography_single_shot_is_rfc9180_with_empty_aad() -> None:
    """RFC 9458 Appendix A: an encapsulated request sealed with RFC 9180 base mode,
    DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM, single shot, empty AAD, and
    info = label || 0x00 || hdr: exactly our framing with another label."""
    sk = X25519PrivateKey.from_private_bytes(
        bytes.fromhex("3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a")
    )
    request = bytes.fromhex(
        "010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472"
        "6374e469135906992e1268c594d2a10c695d858c40a026e7965e7d86b83dd440b2c0185204b4d63525"
    )
    hdr = request[:7]
    info = b"message/bhttp request" + b"\x00" + hdr
    assert info.hex() == "6d6573736167652f626874747020726571756573740001002000010001"
    plaintext = SUITE.decrypt(request[7:], sk, info=info)
    assert plaintext.hex() == "00034745540568747470730b6578616d706c652e636f6d012f"


def test_an_ohttp_request_is_not_a_streamtally_report(tmp_path: Path, clock: FakeClock) -> None:
    """Same key, same framing, but the OHTTP label: our info keeps the two apart."""
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    sk = bytes.fromhex("3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a")
    path = folder / "key-1.json"
    path.write_text(
        json.dumps(
            {
                "key_id": 1,
                "private_key": base64.b64encode(sk).decode(),
                "created_at": T0,
                "retired_at": None,
            }
        )
    )
    path.chmod(0o600)
    keys = KeyStore.open(folder, OVERLAP, clock)
    request = bytes.fromhex(
        "010020000100014b28f881333e7c164ffc499ad9796f877f4e1051ee6d31bad19dec96c208b472"
        "6374e469135906992e1268c594d2a10c695d858c40a026e7965e7d86b83dd440b2c0185204b4d63525"
    )
    assert_bad_request(
        request, keys, "cannot open sealed body (wrong key or corrupted)", "ciphertext"
    )
    # ...while the same bytes under our label would open: the key and suite are right.
    resealed = independent_seal(b"GET /", 1, keys.current().private_key.public_key())
    assert open_sealed(resealed, keys).plaintext == b"GET /"


# --- round trips ---


@pytest.mark.parametrize(
    "plaintext",
    [
        pytest.param(PAYLOAD, id="cmcd-events"),
        pytest.param(b"", id="empty"),
        pytest.param(bytes(range(256)) * 200, id="51k-binary"),
    ],
)
def test_opens_a_body_from_an_independent_encoder(keys: KeyStore, plaintext: bytes) -> None:
    key_id, pk = public(keys)
    body = independent_seal(plaintext, key_id, pk)
    opened = open_sealed(body, keys)
    assert opened.plaintext == plaintext
    assert opened.key_id == key_id
    assert opened.enc == body[7:39]
    assert type(opened.enc) is bytes
    assert type(opened.plaintext) is bytes
    assert len(body) == 7 + 32 + len(plaintext) + 16


def test_seal_output_opens_with_an_independent_decoder(keys: KeyStore) -> None:
    key = keys.current()
    body = seal(PAYLOAD, key.key_id, key.private_key.public_key())
    hdr = body[:7]
    assert hdr == bytes([key.key_id]) + bytes.fromhex("002000010001")
    info = b"streamtally/1 cmcd\x00" + hdr
    assert SUITE.decrypt(body[7:], key.private_key, info=info) == PAYLOAD
    assert open_sealed(body, keys).plaintext == PAYLOAD


def test_each_seal_has_a_fresh_enc(keys: KeyStore) -> None:
    """The replay check keys on enc: two reports with the same content must differ."""
    key_id, pk = public(keys)
    encs = {open_sealed(seal(PAYLOAD, key_id, pk), keys).enc for _ in range(5)}
    assert len(encs) == 5


# --- malformed bodies ---


@pytest.mark.parametrize("length", [0, 1, 6, 7, 38], ids=lambda n: f"{n}-bytes")
def test_short_body(keys: KeyStore, length: int) -> None:
    key_id, pk = public(keys)
    body = independent_seal(PAYLOAD, key_id, pk)[:length]
    assert_bad_request(body, keys, "sealed body shorter than header+enc", "body")


@pytest.mark.parametrize(
    ("kem", "kdf", "aead", "detail"),
    [
        pytest.param(0x0010, 1, 1, "kem=0x0010 kdf=0x0001 aead=0x0001", id="kem-p256"),
        pytest.param(0x0020, 3, 1, "kem=0x0020 kdf=0x0003 aead=0x0001", id="kdf-sha512"),
        pytest.param(0x0020, 1, 3, "kem=0x0020 kdf=0x0001 aead=0x0003", id="aead-chacha"),
        pytest.param(0xFFFF, 0xFFFF, 0xFFFF, "kem=0xffff kdf=0xffff aead=0xffff", id="all-unknown"),
    ],
)
def test_unsupported_suite(keys: KeyStore, kem: int, kdf: int, aead: int, detail: str) -> None:
    key_id, pk = public(keys)
    body = independent_seal(PAYLOAD, key_id, pk, kem=kem, kdf=kdf, aead=aead)
    assert_bad_request(body, keys, f"unsupported HPKE suite {detail}", "suite")


def test_unknown_key_id(keys: KeyStore) -> None:
    key_id, pk = public(keys)
    other = (key_id + 7) % 256
    body = independent_seal(PAYLOAD, other, pk)
    error = assert_bad_request(
        body, keys, f"unknown key_id {other}: fetch /v1/keys again", "key_id"
    )
    assert error.problem()["key"] == "key_id"


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(7, id="enc-first-byte"),
        pytest.param(38, id="enc-last-byte"),
        pytest.param(39, id="ciphertext-first-byte"),
        pytest.param(-17, id="ciphertext-last-byte"),
        pytest.param(-1, id="tag-last-byte"),
    ],
)
def test_flipped_byte_cannot_open(keys: KeyStore, position: int) -> None:
    key_id, pk = public(keys)
    body = bytearray(independent_seal(PAYLOAD, key_id, pk))
    body[position] ^= 0x01
    assert_bad_request(
        bytes(body), keys, "cannot open sealed body (wrong key or corrupted)", "ciphertext"
    )


@pytest.mark.parametrize(
    "cut",
    [pytest.param(1, id="last-byte"), pytest.param(16, id="whole-tag")],
)
def test_truncated_ciphertext_cannot_open(keys: KeyStore, cut: int) -> None:
    key_id, pk = public(keys)
    body = independent_seal(PAYLOAD, key_id, pk)[:-cut]
    assert_bad_request(body, keys, "cannot open sealed body (wrong key or corrupted)", "ciphertext")


def test_header_byte_changed_to_another_usable_key_cannot_open(
    keys: KeyStore, clock: FakeClock
) -> None:
    """The key_id byte is bound through info: pointing a body at another key fails."""
    old_id, old_pk = public(keys)
    clock.now = T0 + 1
    new = keys.rotate()
    body = bytearray(independent_seal(PAYLOAD, old_id, old_pk))
    body[0] = new.key_id
    assert_bad_request(
        bytes(body), keys, "cannot open sealed body (wrong key or corrupted)", "ciphertext"
    )


@pytest.mark.parametrize(
    "info",
    [
        pytest.param(b"", id="empty-info"),
        pytest.param(b"streamtally/1 cmcd", id="no-header"),
        pytest.param(b"streamtally/2 cmcd\x00", id="other-version"),
        pytest.param(b"message/bhttp request\x00", id="ohttp-label"),
        pytest.param(None, id="header-of-other-key-id"),
    ],
)
def test_wrong_info_cannot_open(keys: KeyStore, info: bytes | None) -> None:
    key_id, pk = public(keys)
    hdr = bytes([key_id]) + bytes.fromhex("002000010001")
    if info is None:
        info = INFO_PREFIX + bytes([(key_id + 1) % 256]) + hdr[1:]
    else:
        info = info + hdr if info.endswith(b"\x00") else info
    body = independent_seal(PAYLOAD, key_id, pk, info=info)
    assert_bad_request(body, keys, "cannot open sealed body (wrong key or corrupted)", "ciphertext")


def test_sealed_to_someone_elses_key_cannot_open(keys: KeyStore) -> None:
    key_id, _ = public(keys)
    stranger = X25519PrivateKey.generate().public_key()
    body = independent_seal(PAYLOAD, key_id, stranger)
    assert_bad_request(body, keys, "cannot open sealed body (wrong key or corrupted)", "ciphertext")


# --- rotation ---


def test_report_sealed_to_rotated_out_key_opens_during_overlap_only(
    keys: KeyStore, clock: FakeClock
) -> None:
    old_id, old_pk = public(keys)
    body = independent_seal(PAYLOAD, old_id, old_pk)
    clock.now = T0 + 10
    new = keys.rotate()
    clock.now = T0 + 10 + OVERLAP - 1
    opened = open_sealed(body, keys)
    assert opened.plaintext == PAYLOAD
    assert opened.key_id == old_id
    # New reports go to the new key meanwhile.
    assert open_sealed(seal(PAYLOAD, new.key_id, new.private_key.public_key()), keys).key_id == (
        new.key_id
    )
    clock.now = T0 + 10 + OVERLAP
    assert_bad_request(body, keys, f"unknown key_id {old_id}: fetch /v1/keys again", "key_id")


# --- nothing but BadRequest, whatever arrives ---


@pytest.fixture(scope="module")
def shared_keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    """One key store for every hypothesis example."""
    return KeyStore.open(tmp_path_factory.mktemp("hypothesis") / "keys", OVERLAP)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=200))
def test_random_bytes_only_ever_raise_bad_request(shared_keys: KeyStore, body: bytes) -> None:
    with pytest.raises(BadRequest):
        open_sealed(body, shared_keys)


@settings(max_examples=300, deadline=None)
@given(rest=st.binary(max_size=200))
def test_random_bytes_behind_a_valid_header_only_ever_raise_bad_request(
    shared_keys: KeyStore, rest: bytes
) -> None:
    hdr = bytes([shared_keys.current().key_id]) + bytes.fromhex("002000010001")
    with pytest.raises(BadRequest):
        open_sealed(hdr + rest, shared_keys)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_to_a_good_body_is_refused(
    shared_keys: KeyStore, data: st.DataObject
) -> None:
    key_id, pk = public(shared_keys)
    body = bytearray(independent_seal(PAYLOAD[:40], key_id, pk))
    position = data.draw(st.integers(0, len(body) - 1), label="position")
    body[position] ^= data.draw(st.integers(1, 255), label="xor")
    with pytest.raises(BadRequest):
        open_sealed(bytes(body), shared_keys)
