"""HPKE key management: the collector's X25519 keys on disk, rotation, and GET /v1/keys.

Each key lives in its own file ``key-<id>.json`` (mode 0600) in a folder of its own
(mode 0700), written atomically, so that ``streamtally keys rotate`` run by another process
and :meth:`KeyStore.reload` in the server never see half a key. After a rotation the
previous key keeps opening reports for ``overlap_seconds``; then it is destroyed.

:meth:`KeyStore.maintain` (run by the service's housekeeping every 30 s) rotates the current
key once it is ``rotation_seconds`` old (0: only by hand) and destroys every retired key whose
overlap has ended, whether or not anyone rotates again: its file is overwritten with zeros,
fsynced and unlinked, and the key is dropped from memory. A report sealed to a destroyed key
gets 400 ``unknown key_id`` (the client fetches /v1/keys again).

The key configuration served at ``GET /v1/keys`` is RFC 9458 ``application/ohttp-keys``:
each key config (key_id, kem_id, public key, kdf/aead pairs, Section 3.1) prefixed by its
2-byte length (Section 3.2), current key first.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from collector.errors import ConfigError

# The one HPKE suite StreamTally speaks (RFC 9180 identifiers).
KEM_ID = 0x0020  # DHKEM(X25519, HKDF-SHA256)
KDF_ID = 0x0001  # HKDF-SHA256
AEAD_ID = 0x0001  # AES-128-GCM
NPK = 32  # X25519 public key (and enc) length

SETTING = "keys"
_FILE_PREFIX = "key-"
_FILE_SUFFIX = ".json"
_LOCK_NAME = ".lock"
_TMP_MARK = ".tmp-"

Clock = Callable[[], float]
_Signature = tuple[tuple[str, int, int, int, int, int], ...]


@dataclass(frozen=True)
class HpkeKey:
    """One X25519 key pair the collector opens sealed reports with."""

    key_id: int  # 0..255
    private_key: X25519PrivateKey = field(repr=False)
    created_at: float  # unix seconds
    retired_at: float | None  # when a newer key replaced it; None for the current key

    def public_bytes(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def key_config(self) -> bytes:
        """This key's RFC 9458 Section 3.1 key config (without the length prefix)."""
        suites = struct.pack("!HH", KDF_ID, AEAD_ID)
        return (
            struct.pack("!BH", self.key_id, KEM_ID)
            + self.public_bytes()
            + struct.pack("!H", len(suites))
            + suites
        )


@dataclass(frozen=True, slots=True)
class _Stored:
    """A key as read from its file; ``generation`` orders keys by rotation."""

    key: HpkeKey
    generation: int


class KeyStore:
    """The collector's HPKE keys in ``folder``: the current one and those still in overlap."""

    def __init__(
        self,
        folder: Path,
        overlap_seconds: int,
        clock: Clock = time.time,
        *,
        rotation_seconds: int = 0,
    ) -> None:
        if overlap_seconds < 0:
            raise ConfigError("key_overlap_seconds", "must be at least 0")
        if rotation_seconds < 0:
            raise ConfigError("key_rotation_seconds", "must be at least 0")
        self.folder = folder
        self.overlap_seconds = overlap_seconds
        self.rotation_seconds = rotation_seconds
        self._clock = clock
        self._signature: _Signature | None = None
        self._stored: list[_Stored] = []  # newest generation first
        self._by_id: dict[int, HpkeKey] = {}
        self.reload()

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        folder: Path,
        overlap_seconds: int,
        clock: Clock = time.time,
        *,
        rotation_seconds: int = 0,
    ) -> KeyStore:
        """Open the key folder, creating it (0700) and a first key if there is none."""
        try:
            if not folder.exists():
                folder.mkdir(mode=0o700, parents=True)
                folder.chmod(0o700)  # whatever the umask
        except FileExistsError:
            pass  # created by a concurrent open; checked like any existing folder
        except OSError as exc:
            raise ConfigError(
                SETTING, f"cannot create key folder {folder}: {exc.strerror}"
            ) from exc
        store = cls(folder, overlap_seconds, clock, rotation_seconds=rotation_seconds)
        if not store._has_current():
            with store._locked():
                store._reload_locked(force=True)
                if not store._has_current():
                    store._add_key(retire_previous=False)
                    store._reload_locked(force=True)
        return store

    def _has_current(self) -> bool:
        return bool(self._stored) and self._stored[0].key.retired_at is None

    # -- reading -----------------------------------------------------------------------

    def current(self) -> HpkeKey:
        """The key new reports should be sealed to."""
        if not self._stored:
            raise ConfigError(
                SETTING, f"no HPKE key in {self.folder}: run `streamtally keys rotate`"
            )
        return self._stored[0].key

    def usable(self) -> list[HpkeKey]:
        """The current key, then retired keys still inside the overlap, newest first."""
        now = self._clock()
        return [s.key for s in self._stored if self._is_usable(s.key, now)]

    def get(self, key_id: int) -> HpkeKey | None:
        """The usable key with this id, or None (unknown, or retired past the overlap)."""
        key = self._by_id.get(key_id)
        if key is None or key.retired_at is None:
            return key
        if self._clock() < key.retired_at + self.overlap_seconds:
            return key
        return None

    def ohttp_keys(self) -> bytes:
        """The ``application/ohttp-keys`` body: current key first, then the other usable ones."""
        out = bytearray()
        for key in self.usable():
            config = key.key_config()
            out += struct.pack("!H", len(config))
            out += config
        return bytes(out)

    def _is_usable(self, key: HpkeKey, now: float) -> bool:
        return key.retired_at is None or now < key.retired_at + self.overlap_seconds

    # -- changing ----------------------------------------------------------------------

    def rotate(self) -> HpkeKey:
        """Make a new current key; the previous one is retired now; expired key files go."""
        with self._locked():
            self._reload_locked(force=True)
            key = self._add_key(retire_previous=True)
            self._reload_locked(force=True)
            self._delete_expired()
            self._reload_locked(force=True)
        return self._by_id[key.key_id]

    def reload(self) -> None:
        """Re-read the folder if any key file changed (another process rotated)."""
        self._reload_locked(force=False)

    def maintain(self) -> HpkeKey | None:
        """Rotate if the current key is ``rotation_seconds`` old; destroy expired keys.

        Returns the new key if one was made. Also picks up keys rotated by another process.
        """
        self.reload()
        now = self._clock()
        due = (
            self.rotation_seconds > 0
            and bool(self._stored)
            and now >= self.current().created_at + self.rotation_seconds
        )
        expired = any(not self._is_usable(s.key, now) for s in self._stored)
        expired = expired or bool(self._expired_files())
        if not due and not expired:
            return None
        with self._locked():
            self._reload_locked(force=True)
            made: HpkeKey | None = None
            if due and now >= self.current().created_at + self.rotation_seconds:
                made = self._add_key(retire_previous=True)
                self._reload_locked(force=True)
            self._delete_expired()
            self._reload_locked(force=True)
        return None if made is None else self._by_id[made.key_id]

    # -- internals ---------------------------------------------------------------------

    def _add_key(self, *, retire_previous: bool) -> HpkeKey:
        now = self._clock()
        previous = self._stored[0] if self._stored else None
        key_id = self._next_key_id(now)
        key = HpkeKey(key_id, X25519PrivateKey.generate(), now, None)
        generation = previous.generation + 1 if previous else 1
        # New key first: a reader that sees it before the old key's retirement still picks
        # the newest generation as current and treats the older one as retired.
        self._write(_Stored(key, generation))
        if retire_previous and previous is not None and previous.key.retired_at is None:
            self._write(_Stored(replace(previous.key, retired_at=now), previous.generation))
        return key

    def _next_key_id(self, now: float) -> int:
        if not self._stored:
            # A random first id: a client holding a config from a lost key folder is told
            # "unknown key_id" (and refetches) rather than failing to decrypt, most likely.
            return secrets.randbelow(256)
        taken = {s.key.key_id for s in self._stored if self._is_usable(s.key, now)}
        start = self._stored[0].key.key_id
        for step in range(1, 257):
            candidate = (start + step) % 256
            if candidate not in taken:
                return candidate
        raise ConfigError(
            SETTING,
            "all 256 key ids are in use: rotate less often or shorten key_overlap_seconds",
        )

    def _delete_expired(self) -> None:
        """Destroy every key file not loaded as usable (reload drops keys past the overlap)."""
        for path in self._expired_files():
            _destroy(path)
        for entry in os.scandir(self.folder):
            if _TMP_MARK in entry.name:  # left by a writer that crashed; we hold the lock
                Path(entry.path).unlink(missing_ok=True)

    def _expired_files(self) -> list[Path]:
        return [
            Path(e.path)
            for e in os.scandir(self.folder)
            if _is_key_file(e.name)
            and int(e.name[len(_FILE_PREFIX) : -len(_FILE_SUFFIX)]) not in self._by_id
        ]

    def _write(self, stored: _Stored) -> None:
        key = stored.key
        document = {
            "key_id": key.key_id,
            "private_key": base64.b64encode(
                key.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            ).decode("ascii"),
            "created_at": key.created_at,
            "retired_at": key.retired_at,
            "generation": stored.generation,
        }
        data = json.dumps(document).encode("ascii")
        final = self.folder / _file_name(key.key_id)
        tmp = self.folder / f".{final.name}{_TMP_MARK}{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self.folder)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers (this server, a `keys rotate` CLI) on an flock in the folder."""
        fd = os.open(self.folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _reload_locked(self, *, force: bool) -> None:
        folder_stat = self._check_folder()
        if folder_stat is None:
            self._stored, self._by_id, self._signature = [], {}, None
            return
        entries = sorted(
            (e for e in os.scandir(self.folder) if _is_key_file(e.name)), key=lambda e: e.name
        )
        signature: _Signature | None = _signature(entries)
        if not force and signature is not None and signature == self._signature:
            return
        loaded = [_load(Path(e.path)) for e in entries]
        stored = [s for s in loaded if s is not None]
        if len(stored) < len(loaded):
            signature = None  # a file vanished mid-read (a rotation elsewhere): look again
        stored.sort(key=lambda s: (s.generation, s.key.created_at), reverse=True)
        # A key without retired_at that is not the newest was replaced by the next newer one
        # (a rotation in progress in another process): treat it as retired at that moment.
        settled: list[_Stored] = []
        newer: _Stored | None = None
        for s in stored:
            if newer is not None and s.key.retired_at is None:
                s = _Stored(replace(s.key, retired_at=newer.key.created_at), s.generation)
            settled.append(s)
            newer = s
        # A key past its overlap is never used again: keep no copy of it in memory (its file
        # is destroyed by the next maintain() or rotate(), under the lock).
        now = self._clock()
        settled = [s for s in settled if s is settled[0] or self._is_usable(s.key, now)]
        self._stored = settled
        self._by_id = {s.key.key_id: s.key for s in settled}
        self._signature = signature

    def _check_folder(self) -> os.stat_result | None:
        try:
            st = os.stat(self.folder)
        except FileNotFoundError:
            return None
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(SETTING, f"{self.folder} is not a folder")
        if st.st_mode & 0o022:
            raise ConfigError(
                SETTING,
                f"key folder {self.folder} is writable by group or others: chmod 700 it",
            )
        return st


def _signature(entries: list[os.DirEntry[str]]) -> _Signature | None:
    """What changes when a key file is written (os.replace: new inode), chmod-ed or removed."""
    parts = []
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return None
        parts.append(
            (entry.name, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_mode)
        )
    return tuple(parts)


def _file_name(key_id: int) -> str:
    return f"{_FILE_PREFIX}{key_id}{_FILE_SUFFIX}"


def _is_key_file(name: str) -> bool:
    if not (name.startswith(_FILE_PREFIX) and name.endswith(_FILE_SUFFIX)):
        return False
    middle = name[len(_FILE_PREFIX) : -len(_FILE_SUFFIX)]
    return middle.isdigit()


def _load(path: Path) -> _Stored | None:
    """Read one key file, refusing one that group or others may read or write.

    None if the file vanished since the folder was listed (deleted by a rotation).
    """
    name = path.name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(SETTING, f"cannot read key file {name}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(SETTING, f"key file {name} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                SETTING,
                f"key file {name} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 it",
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read()
    finally:
        os.close(fd)
    try:
        doc: Any = json.loads(raw)
        key_id = doc["key_id"]
        private = base64.b64decode(doc["private_key"], validate=True)
        created_at = float(doc["created_at"])
        retired_raw = doc["retired_at"]
        retired_at = None if retired_raw is None else float(retired_raw)
        generation = int(doc.get("generation", 0))
        if not isinstance(key_id, int) or not 0 <= key_id <= 255:
            raise ValueError("key_id out of range")
        if name != _file_name(key_id):
            raise ValueError("key_id does not match the file name")
        private_key = X25519PrivateKey.from_private_bytes(private)
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        # Never echo the file's content: it holds a private key.
        raise ConfigError(SETTING, f"key file {name} is malformed ({type(exc).__name__})") from None
    return _Stored(HpkeKey(key_id, private_key, created_at, retired_at), generation)


def _destroy(path: Path) -> None:
    """Overwrite a key file with zeros, fsync it, unlink it (and fsync the folder).

    On a copy-on-write or journaling filesystem, or an SSD, the old blocks may survive the
    overwrite; no file holds the key any more, which is what this can promise.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, bytes(size))
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
