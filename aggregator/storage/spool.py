"""The bounded on-disk spool that holds finished, k-anonymous batches while ClickHouse is down.

Layout: one file per batch in the spool folder, named by a monotonically increasing sequence
number (``00000000000000000042.rec``); the oldest batch has the smallest number.

- ``append`` writes the record to ``<seq>.tmp``, flushes and fsyncs it, renames it to
  ``<seq>.rec`` and fsyncs the folder. A batch is in the spool exactly when its ``.rec``
  name exists, so a crash mid-append leaves at most a ``.tmp`` file, which the next open
  deletes (that append never returned, so nobody was told the batch was kept).
- ``pop`` unlinks the oldest ``.rec`` and fsyncs the folder.
- Record: ``b"STS1"``, payload length (4 bytes, big-endian), CRC-32 of the payload (4 bytes,
  ``zlib.crc32``), then the payload, the batch as orjson. Opening the spool reads every record
  and checks magic, length and checksum; a record that fails (a torn write the file system
  did not order, a flipped bit, a truncated file) is counted in
  ``streamtally_spool_corrupt_records_total``, logged by its file name only, and deleted.
  Corruption stays confined to its own record: every other record is kept, in order.

Only what the writer appends is stored: table, columns, rows and the deduplication token of a
batch, rows that already passed k-anonymity. No viewer key ever reaches the spool.

Values round-trip exactly: str, int, float (also NaN and infinities), bool, None, lists, dicts
with str keys, and datetimes (tz-aware ones keep their offset). Tags: ``{"$dt": iso}`` for a
datetime, ``{"$map": {...}}`` for a dict, ``{"$f": "nan"|"inf"|"-inf"}`` for non-finite floats,
so a dict in the rows can never be mistaken for a tag.

A POSIX lock on ``LOCK`` keeps a second process from using the same folder at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
from prometheus_client import Counter, Gauge

from collector.errors import StorageError

log = logging.getLogger("streamtally.aggregator.spool")

SPOOL_BYTES = Gauge("streamtally_spool_bytes", "Bytes of batches waiting in the on-disk spool")
SPOOL_BATCHES = Gauge("streamtally_spool_batches", "Batches waiting in the on-disk spool")
SPOOL_CORRUPT = Counter(
    "streamtally_spool_corrupt_records_total",
    "Spool records found damaged (bad length, checksum or payload) and discarded on open",
)

MAGIC = b"STS1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, CRC-32 of the payload
HEADER_SIZE = _HEADER.size
_RECORD_NAME = re.compile(r"(\d{20})\.rec")
_TEMP_NAME = re.compile(r"(\d{20})\.tmp")
_LOCK_NAME = "LOCK"
_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows for one ``INSERT``, with the deterministic ``insert_deduplication_token``."""

    table: str
    columns: tuple[str, ...]
    rows: list[list[Any]]
    token: str


class SpoolFull(StorageError):
    """The spool has no room for a batch: the caller must refuse new work (503)."""


class SpoolCorrupt(ValueError):
    """A spool record failed its checks (internal: such a record is discarded)."""


# ---- encoding ---------------------------------------------------------------------------------


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$f": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, dict):
        return {"$map": {str(k): _encode_value(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value]
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if isinstance(value, dict):
        if len(value) != 1:
            raise SpoolCorrupt("an object that is not a tag")
        ((tag, inner),) = value.items()
        if tag == "$dt" and isinstance(inner, str):
            return datetime.fromisoformat(inner)
        if tag == "$map" and isinstance(inner, dict):
            return {k: _decode_value(v) for k, v in inner.items()}
        if tag == "$f" and inner in ("nan", "inf", "-inf"):
            return float(inner)
        raise SpoolCorrupt("an unknown tag")
    return value


def encode_batch(batch: Batch) -> bytes:
    """The orjson payload of a batch (what a record holds after its header)."""
    document = {
        "v": _FORMAT_VERSION,
        "table": batch.table,
        "columns": list(batch.columns),
        "rows": [[_encode_value(v) for v in row] for row in batch.rows],
        "token": batch.token,
    }
    return orjson.dumps(document)


def decode_batch(payload: bytes) -> Batch:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise SpoolCorrupt("payload is not JSON") from None
    if not isinstance(document, dict) or document.get("v") != _FORMAT_VERSION:
        raise SpoolCorrupt("unknown payload version")
    table, columns = document.get("table"), document.get("columns")
    rows, token = document.get("rows"), document.get("token")
    if (
        not isinstance(table, str)
        or not isinstance(token, str)
        or not isinstance(columns, list)
        or not all(isinstance(c, str) for c in columns)
        or not isinstance(rows, list)
        or not all(isinstance(r, list) for r in rows)
    ):
        raise SpoolCorrupt("payload is not a batch")
    return Batch(table, tuple(columns), [_decode_value(row) for row in rows], token)


def encode_record(batch: Batch) -> bytes:
    """Header (magic, length, CRC-32) and payload: the exact bytes of one ``.rec`` file."""
    payload = encode_batch(batch)
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_record(data: bytes) -> Batch:
    if len(data) < HEADER_SIZE:
        raise SpoolCorrupt("shorter than a header")
    magic, length, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SpoolCorrupt("bad magic")
    payload = data[HEADER_SIZE:]
    if len(payload) != length:
        raise SpoolCorrupt("length does not match")
    if zlib.crc32(payload) != crc:
        raise SpoolCorrupt("checksum does not match")
    return decode_batch(payload)


# ---- file system helpers ----------------------------------------------------------------------


def _why(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror or exc}"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the spool --------------------------------------------------------------------------------


class Spool:
    """Batches waiting for ClickHouse, oldest first, at most ``max_bytes`` on disk.

    Not thread-safe: one writer uses it (the :class:`aggregator.storage.writer.Writer`).
    """

    def __init__(self, folder: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._folder = Path(folder)
        self._max_bytes = max_bytes
        self._entries: deque[tuple[int, int]] = deque()  # (sequence, record size), oldest first
        self._bytes = 0
        self._next_seq = 1
        self._refused = False  # an append did not fit; cleared when a pop frees room
        self._head: tuple[int, Batch] | None = None
        self._lock: IO[bytes] | None = None
        try:
            self._folder.mkdir(parents=True, exist_ok=True)
            self._lock = self._take_lock()
            self._recover()
        except OSError as exc:
            self.close()
            raise StorageError(f"cannot open the spool in {self._folder}: {_why(exc)}") from None
        self._publish()

    # ---- opening ----------------------------------------------------------------------------

    def _take_lock(self) -> IO[bytes]:
        handle = (self._folder / _LOCK_NAME).open("ab")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StorageError(
                f"the spool in {self._folder} is in use by another process"
            ) from None
        return handle

    def _recover(self) -> None:
        """Find the records, drop leftover temporary files and damaged records."""
        records: list[tuple[int, Path]] = []
        changed = False
        for path in self._folder.iterdir():
            if match := _RECORD_NAME.fullmatch(path.name):
                records.append((int(match.group(1)), path))
            elif _TEMP_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)  # an append that never finished
                changed = True
        records.sort()
        for seq, path in records:
            data = path.read_bytes()
            try:
                decode_record(data)
            except SpoolCorrupt as exc:
                SPOOL_CORRUPT.inc()
                log.warning("spool record %s is damaged (%s) and was discarded", path.name, exc)
                path.unlink(missing_ok=True)
                changed = True
                continue
            self._entries.append((seq, len(data)))
            self._bytes += len(data)
        if records:
            self._next_seq = records[-1][0] + 1
        if changed:
            _fsync_dir(self._folder)

    # ---- public API -------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return self._folder

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def append(self, batch: Batch) -> None:
        """Add a batch as the newest; durable (fsynced) when this returns. Raises SpoolFull."""
        self._check_open()
        record = encode_record(batch)
        if self._bytes + len(record) > self._max_bytes:
            self._refused = True
            self._publish()
            raise SpoolFull(
                f"the spool in {self._folder} is full: {self._bytes} of {self._max_bytes} bytes "
                f"used, a batch for {batch.table} needs {len(record)}"
            )
        seq = self._next_seq
        temp = self._folder / f"{seq:020d}.tmp"
        try:
            with temp.open("wb") as handle:
                handle.write(record)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self._path(seq))
            _fsync_dir(self._folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
            raise StorageError(
                f"cannot write to the spool in {self._folder}: {_why(exc)}"
            ) from None
        self._next_seq = seq + 1
        self._entries.append((seq, len(record)))
        self._bytes += len(record)
        self._publish()

    def peek(self) -> Batch | None:
        """The oldest batch, or None when the spool is empty."""
        self._check_open()
        while self._entries:
            seq, _ = self._entries[0]
            if self._head is not None and self._head[0] == seq:
                return self._head[1]
            try:
                batch = decode_record(self._path(seq).read_bytes())
            except (SpoolCorrupt, FileNotFoundError) as exc:
                # Damaged or removed after opening (checked on open): count, drop, go on.
                SPOOL_CORRUPT.inc()
                log.warning("spool record %s is unreadable (%s) and was discarded", seq, exc)
                self.pop()
                continue
            except OSError as exc:
                raise StorageError(
                    f"cannot read the spool in {self._folder}: {_why(exc)}"
                ) from None
            self._head = (seq, batch)
            return batch
        return None

    def pop(self) -> None:
        """Remove the oldest batch, durably. Does nothing when the spool is empty."""
        self._check_open()
        if not self._entries:
            return
        seq, size = self._entries[0]
        try:
            self._path(seq).unlink(missing_ok=True)
            _fsync_dir(self._folder)
        except OSError as exc:
            raise StorageError(
                f"cannot remove a record from the spool in {self._folder}: {_why(exc)}"
            ) from None
        self._entries.popleft()
        self._bytes -= size
        self._head = None
        self._refused = False
        self._publish()

    def __len__(self) -> int:
        return len(self._entries)

    def bytes(self) -> int:
        """Bytes on disk of the spooled records."""
        return self._bytes

    def full(self) -> bool:
        """True once an append did not fit (until a pop frees room), or at the limit."""
        return self._refused or self._bytes >= self._max_bytes

    def close(self) -> None:
        """Release the folder's lock. The records stay for the next open."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- internals --------------------------------------------------------------------------

    def _path(self, seq: int) -> Path:
        return self._folder / f"{seq:020d}.rec"

    def _check_open(self) -> None:
        if self._lock is None:
            raise StorageError(f"the spool in {self._folder} is closed")

    def _publish(self) -> None:
        SPOOL_BYTES.set(self._bytes)
        SPOOL_BATCHES.set(len(self))
