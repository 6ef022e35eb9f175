"""The HPKE key store: files on disk, rotation with overlap, and the ohttp-keys body."""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from collector.errors import ConfigError
from collector.keys import KeyStore

OVERLAP = 600
T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "data" / "keys"


@pytest.fixture
def store(folder: Path, clock: FakeClock) -> KeyStore:
    return KeyStore.open(folder, OVERLAP, clock)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith("key-")}


def write_key_file(
    folder: Path, key_id: int, *, created_at: float, retired_at: float | None
) -> X25519PrivateKey:
    """A key file in the documented format, written by hand (as an operator or tool might)."""
    private = X25519PrivateKey.generate()
    path = folder / f"key-{key_id}.json"
    path.write_text(
        json.dumps(
            {
                "key_id": key_id,
                "private_key": base64.b64encode(private.private_bytes_raw()).decode(),
                "created_at": created_at,
                "retired_at": retired_at,
            }
        )
    )
    path.chmod(0o600)
    return private


def raw_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# --- an independent application/ohttp-keys decoder, per RFC 9458 Sections 3.1 and 3.2 ---

NPK_BY_KEM = {0x0010: 65, 0x0011: 97, 0x0012: 133, 0x0020: 32, 0x0021: 56}


def decode_ohttp_keys(data: bytes) -> list[tuple[int, int, bytes, list[tuple[int, int]]]]:
    """[(key_id, kem_id, public_key, [(kdf_id, aead_id), ...]), ...] in order."""
    configs = []
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("!H", data, pos)
        pos += 2
        config = data[pos : pos + length]
        assert len(config) == length, "key config shorter than its length prefix"
        pos += length
        key_id, kem_id = struct.unpack_from("!BH", config, 0)
        npk = NPK_BY_KEM[kem_id]
        public_key = config[3 : 3 + npk]
        (sym_len,) = struct.unpack_from("!H", config, 3 + npk)
        assert 4 <= sym_len <= 65532
        assert sym_len % 4 == 0
        sym = config[5 + npk :]
        assert len(sym) == sym_len, "symmetric algorithms length does not match the config"
        pairs = [struct.unpack_from("!HH", sym, i) for i in range(0, sym_len, 4)]
        configs.append((key_id, kem_id, public_key, pairs))
    return configs


def test_decoder_reads_rfc9458_appendix_a_key_config() -> None:
    """The test's own decoder agrees with the RFC's published key configuration."""
    config = bytes.fromhex(
        "01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e79815500080001000100010003"
    )
    body = struct.pack("!H", len(config)) + config
    assert decode_ohttp_keys(body) == [
        (
            1,
            0x0020,
            bytes.fromhex("31e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e798155"),
            [(1, 1), (1, 3)],
        )
    ]


# --- first open, reopen ---


def test_first_open_creates_private_folder_and_key_file(store: KeyStore, folder: Path) -> None:
    key = store.current()
    assert mode(folder) == 0o700
    assert key_files(folder) == {f"key-{key.key_id}.json"}
    assert mode(folder / f"key-{key.key_id}.json") == 0o600
    assert 0 <= key.key_id <= 255
    assert key.retired_at is None
    assert key.created_at == T0
    assert len(key.public_bytes()) == 32
    assert store.usable() == [key]


def test_first_open_with_loose_umask_still_private(tmp_path: Path, clock: FakeClock) -> None:
    old = os.umask(0)
    try:
        store = KeyStore.open(tmp_path / "keys", OVERLAP, clock)
    finally:
        os.umask(old)
    assert mode(tmp_path / "keys") == 0o700
    assert mode(tmp_path / "keys" / f"key-{store.current().key_id}.json") == 0o600


def test_reopen_loads_the_same_key(store: KeyStore, folder: Path, clock: FakeClock) -> None:
    first = store.current()
    again = KeyStore.open(folder, OVERLAP, clock).current()
    assert again.key_id == first.key_id
    assert again.public_bytes() == first.public_bytes()
    assert again.created_at == first.created_at
    assert key_files(folder) == {f"key-{first.key_id}.json"}


def test_loads_a_hand_written_key_file(tmp_path: Path, clock: FakeClock) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    private = write_key_file(folder, 42, created_at=T0 - 10, retired_at=None)
    store = KeyStore.open(folder, OVERLAP, clock)
    assert store.current().key_id == 42
    assert store.current().public_bytes() == raw_public(private)


# --- rotation and overlap ---


def test_rotate_makes_new_current_and_old_usable_within_overlap(
    store: KeyStore, clock: FakeClock
) -> None:
    old = store.current()
    clock.now = T0 + 100
    new = store.rotate()
    assert store.current() == new
    assert new.key_id != old.key_id
    assert new.retired_at is None
    assert new.public_bytes() != old.public_bytes()
    retired = store.get(old.key_id)
    assert retired is not None
    assert retired.retired_at == T0 + 100
    assert retired.public_bytes() == old.public_bytes()
    assert [k.key_id for k in store.usable()] == [new.key_id, old.key_id]

    clock.now = T0 + 100 + OVERLAP - 0.001
    assert store.get(old.key_id) is not None

    clock.now = T0 + 100 + OVERLAP
    assert store.get(old.key_id) is None
    assert store.usable() == [new]
    assert store.get(new.key_id) == new


def test_zero_overlap_retires_at_once(folder: Path, clock: FakeClock) -> None:
    store = KeyStore.open(folder, 0, clock)
    old = store.current()
    store.rotate()
    assert store.get(old.key_id) is None


def test_rotation_persists_retirement(store: KeyStore, folder: Path, clock: FakeClock) -> None:
    old = store.current()
    clock.now = T0 + 5
    new = store.rotate()
    reopened = KeyStore.open(folder, OVERLAP, clock)
    assert reopened.current().key_id == new.key_id
    assert [(k.key_id, k.retired_at) for k in reopened.usable()] == [
        (new.key_id, None),
        (old.key_id, T0 + 5),
    ]
    for name in key_files(folder):
        assert mode(folder / name) == 0o600


def test_expired_key_file_is_deleted_on_next_rotation(
    store: KeyStore, folder: Path, clock: FakeClock
) -> None:
    first = store.current()
    second = store.rotate()
    assert key_files(folder) == {f"key-{first.key_id}.json", f"key-{second.key_id}.json"}
    clock.now = T0 + OVERLAP + 1
    third = store.rotate()
    assert key_files(folder) == {f"key-{second.key_id}.json", f"key-{third.key_id}.json"}
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


def test_key_ids_wrap_around_after_255(tmp_path: Path, clock: FakeClock) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    write_key_file(folder, 255, created_at=T0 - 10, retired_at=None)
    store = KeyStore.open(folder, OVERLAP, clock)
    assert store.rotate().key_id == 0
    assert store.rotate().key_id == 1


def test_rotation_skips_ids_still_usable(tmp_path: Path, clock: FakeClock) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    # Current key 10; key 11 was retired a moment ago (on an earlier trip round the ids).
    write_key_file(folder, 11, created_at=T0 - 100, retired_at=T0 - 1)
    write_key_file(folder, 10, created_at=T0 - 1, retired_at=None)
    store = KeyStore.open(folder, OVERLAP, clock)
    assert [k.key_id for k in store.usable()] == [10, 11]
    new = store.rotate()
    assert new.key_id == 12
    assert [k.key_id for k in store.usable()] == [12, 10, 11]


def test_rotation_reuses_an_expired_id(tmp_path: Path, clock: FakeClock) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    write_key_file(folder, 200, created_at=T0 - 10_000, retired_at=T0 - OVERLAP - 1)
    write_key_file(folder, 199, created_at=T0 - 1, retired_at=None)
    store = KeyStore.open(folder, OVERLAP, clock)
    assert store.current().key_id == 199
    new = store.rotate()
    assert new.key_id == 200
    assert store.current() == new
    assert store.get(200) == new
    assert key_files(folder) == {"key-199.json", "key-200.json"}


def test_all_ids_usable_refuses_to_rotate(tmp_path: Path, clock: FakeClock) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    for key_id in range(255):
        write_key_file(folder, key_id, created_at=T0 - 300 + key_id, retired_at=T0 - 1)
    store = KeyStore.open(folder, OVERLAP, clock)  # no current key: makes one, id 255
    assert store.current().key_id == 255
    assert len({k.key_id for k in store.usable()}) == 256
    with pytest.raises(ConfigError) as excinfo:
        store.rotate()
    assert excinfo.value.setting == "keys"
    assert len({k.key_id for k in store.usable()}) == 256


# --- permissions and malformed files ---


@pytest.mark.parametrize(
    "file_mode",
    [
        pytest.param(0o640, id="group-readable"),
        pytest.param(0o604, id="other-readable"),
        pytest.param(0o620, id="group-writable"),
        pytest.param(0o644, id="umask-022-default"),
    ],
)
def test_key_file_open_to_group_or_others_is_refused(
    store: KeyStore, folder: Path, clock: FakeClock, file_mode: int
) -> None:
    path = folder / f"key-{store.current().key_id}.json"
    secret = json.loads(path.read_text())["private_key"]
    path.chmod(file_mode)
    with pytest.raises(ConfigError) as excinfo:
        KeyStore.open(folder, OVERLAP, clock)
    assert excinfo.value.setting == "keys"
    assert path.name in str(excinfo.value)
    assert secret not in str(excinfo.value)


def test_reload_refuses_a_file_made_group_readable(store: KeyStore, folder: Path) -> None:
    (folder / f"key-{store.current().key_id}.json").chmod(0o640)
    with pytest.raises(ConfigError, match=r"^keys: "):
        store.reload()


def test_folder_writable_by_others_is_refused(
    store: KeyStore, folder: Path, clock: FakeClock
) -> None:
    folder.chmod(0o777)
    with pytest.raises(ConfigError, match=r"^keys: .*writable by group or others"):
        KeyStore.open(folder, OVERLAP, clock)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param('{"key_id": 7}', id="fields-missing"),
        pytest.param(
            '{"key_id": 8, "private_key": "AAAA", "created_at": 1, "retired_at": null}',
            id="id-differs-from-file-name",
        ),
        pytest.param(
            '{"key_id": 7, "private_key": "AAAA", "created_at": 1, "retired_at": null}',
            id="key-too-short",
        ),
        pytest.param(
            '{"key_id": 7, "private_key": "!!", "created_at": 1, "retired_at": null}',
            id="not-base64",
        ),
    ],
)
def test_malformed_key_file_is_refused_without_echoing_it(
    tmp_path: Path, clock: FakeClock, content: str
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    path = folder / "key-7.json"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as excinfo:
        KeyStore.open(folder, OVERLAP, clock)
    assert excinfo.value.setting == "keys"
    assert "key-7.json" in str(excinfo.value)
    assert "AAAA" not in str(excinfo.value)


def test_key_repr_does_not_show_the_private_key(store: KeyStore, folder: Path) -> None:
    key = store.current()
    secret = json.loads((folder / f"key-{key.key_id}.json").read_text())["private_key"]
    assert secret not in repr(key)
    assert "private_key" not in repr(key)


# --- application/ohttp-keys ---


def test_ohttp_keys_lists_current_then_usable_per_rfc9458(
    store: KeyStore, clock: FakeClock
) -> None:
    old = store.current()
    assert decode_ohttp_keys(store.ohttp_keys()) == [
        (old.key_id, 0x0020, old.public_bytes(), [(0x0001, 0x0001)])
    ]
    clock.now = T0 + 1
    new = store.rotate()
    assert decode_ohttp_keys(store.ohttp_keys()) == [
        (new.key_id, 0x0020, new.public_bytes(), [(0x0001, 0x0001)]),
        (old.key_id, 0x0020, old.public_bytes(), [(0x0001, 0x0001)]),
    ]
    clock.now = T0 + 1 + OVERLAP
    assert decode_ohttp_keys(store.ohttp_keys()) == [
        (new.key_id, 0x0020, new.public_bytes(), [(0x0001, 0x0001)])
    ]


def test_ohttp_keys_exact_bytes_for_a_known_key(tmp_path: Path, clock: FakeClock) -> None:
    """RFC 9458 Appendix A's gateway key, served by us with our one suite."""
    folder = tmp_path / "keys"
    folder.mkdir(mode=0o700)
    sk = bytes.fromhex("3c168975674b2fa8e465970b79c8dcf09f1c741626480bd4c6162fc5b6a98e1a")
    (folder / "key-1.json").write_text(
        json.dumps(
            {
                "key_id": 1,
                "private_key": base64.b64encode(sk).decode(),
                "created_at": T0,
                "retired_at": None,
            }
        )
    )
    (folder / "key-1.json").chmod(0o600)
    store = KeyStore.open(folder, OVERLAP, clock)
    assert store.ohttp_keys().hex() == (
        "0029"  # length of the one config: 1 + 2 + 32 + 2 + 4 = 41
        "01"  # key_id
        "0020"  # DHKEM(X25519, HKDF-SHA256)
        "31e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e798155"
        "0004"  # symmetric algorithms length in bytes
        "00010001"  # HKDF-SHA256, AES-128-GCM
    )


# --- reload across processes ---


def test_reload_picks_up_a_rotation_by_another_store(
    store: KeyStore, folder: Path, clock: FakeClock
) -> None:
    old = store.current()
    other = KeyStore.open(folder, OVERLAP, clock)
    clock.now = T0 + 30
    new = other.rotate()
    assert store.current() == old  # not yet seen
    store.reload()
    assert store.current().key_id == new.key_id
    assert store.current().public_bytes() == new.public_bytes()
    retired = store.get(old.key_id)
    assert retired is not None
    assert retired.retired_at == T0 + 30


def test_reload_without_changes_keeps_the_loaded_keys(store: KeyStore) -> None:
    before = store.current()
    store.reload()
    assert store.current() is before


def test_reader_mid_rotation_treats_older_unretired_key_as_retired(
    store: KeyStore, folder: Path, clock: FakeClock
) -> None:
    """Another process wrote its new key but has not yet rewritten the old one."""
    old = store.current()
    new_id = (old.key_id + 1) % 256
    private = write_key_file(folder, new_id, created_at=T0 + 50, retired_at=None)
    path = folder / f"key-{new_id}.json"
    doc = json.loads(path.read_text())
    doc["generation"] = 2
    path.write_text(json.dumps(doc))
    store.reload()
    assert store.current().key_id == new_id
    assert store.current().public_bytes() == raw_public(private)
    retired = store.get(old.key_id)
    assert retired is not None
    assert retired.retired_at == T0 + 50


def test_failed_reload_keeps_the_keys_already_loaded(
    store: KeyStore, folder: Path, clock: FakeClock
) -> None:
    """A bad file dropped in by hand is reported, and reports keep opening meanwhile."""
    old = store.current()
    other = KeyStore.open(folder, OVERLAP, clock)
    other.rotate()
    (folder / "key-77.json").write_text("{broken")
    (folder / "key-77.json").chmod(0o600)
    with pytest.raises(ConfigError, match=r"^keys: key file key-77.json is malformed"):
        store.reload()
    assert store.current().key_id == old.key_id
    assert store.get(old.key_id) is not None


# --- scheduled rotation and destruction of retired keys (issue 10, finding 7) ---

ROTATION = 3600


def private_raw(key: object) -> bytes:
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    return key.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())  # type: ignore[attr-defined]


def holding(folder: Path, secret: bytes) -> list[str]:
    """Files under the data dir whose bytes hold the private key (raw or base64)."""
    needles = (secret, base64.b64encode(secret))
    return [
        str(p)
        for p in folder.parent.rglob("*")
        if p.is_file() and any(n in p.read_bytes() for n in needles)
    ]


def test_maintain_rotates_a_current_key_older_than_the_rotation_period(
    folder: Path, clock: FakeClock
) -> None:
    store = KeyStore.open(folder, OVERLAP, clock, rotation_seconds=ROTATION)
    first = store.current()
    clock.now = T0 + ROTATION - 1
    store.maintain()
    assert store.current().key_id == first.key_id
    clock.now = T0 + ROTATION
    store.maintain()
    assert store.current().key_id != first.key_id
    assert store.get(first.key_id) is not None  # still opens reports during the overlap


def test_a_retired_key_is_destroyed_after_its_overlap_without_another_rotation(
    folder: Path, clock: FakeClock
) -> None:
    """The attack: read the retired private key from the disk (or memory) after its overlap."""
    store = KeyStore.open(folder, OVERLAP, clock, rotation_seconds=ROTATION)
    old = store.current()
    secret = private_raw(old)
    clock.now = T0 + ROTATION
    store.maintain()
    assert holding(folder, secret)  # inside the overlap: still there, as documented
    clock.now = T0 + ROTATION + OVERLAP
    store.maintain()  # no rotation due: the current key is younger than ROTATION
    assert holding(folder, secret) == []
    assert f"key-{old.key_id}.json" not in key_files(folder)
    assert old.key_id not in {k.key_id for k in store.usable()}
    assert all(k.key_id != old.key_id for k in store._by_id.values())  # dropped from memory
    assert store.get(old.key_id) is None


def test_rotation_zero_never_rotates_by_itself(folder: Path, clock: FakeClock) -> None:
    store = KeyStore.open(folder, OVERLAP, clock, rotation_seconds=0)
    first = store.current()
    clock.now = T0 + 10 * 365 * 86400
    store.maintain()
    assert store.current().key_id == first.key_id
