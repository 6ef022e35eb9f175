"""Look for strings in every file under a folder, as an attacker with the disk would.

:func:`scan` reads each regular file under the folder and searches its bytes for each needle
(UTF-8), twice: as stored, and, when the file parses as a ClickHouse compressed stream
(``.bin`` columns, compact ``data.bin``, ``primary.cidx``, compressed marks: a sequence of
blocks ``checksum(16) method(1) compressed_size(4) uncompressed_size(4) payload``), decompressed
block by block (methods none, LZ4 and ZSTD). LZ4 keeps a string's first occurrence as a literal
most of the time, but a string repeated inside a block can be stored as a back-reference, so
the raw search alone would miss it; the decompressed search does not.

What it cannot see: bytes of files already unlinked (free filesystem blocks, the page cache),
process memory and swap, files outside the folder (the server's own log, /tmp), and codecs
other than none/LZ4/ZSTD over a whole block (e.g. a column with a Delta codec in front). A
needle split across two compressed blocks is found in the decompressed text (blocks are
joined), but not one split across files.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import lz4.block
from backports import zstd  # both come with clickhouse-connect

_HEADER = 16 + 9  # checksum, then method, compressed size (with the 9 bytes), uncompressed size
_NONE, _LZ4, _ZSTD = 0x02, 0x82, 0x90


def decompress_clickhouse(data: bytes) -> bytes | None:
    """The content of a ClickHouse compressed stream, or None if ``data`` is not one."""
    out = bytearray()
    pos = 0
    if len(data) < _HEADER:
        return None
    while pos < len(data):
        if len(data) - pos < _HEADER:
            return None
        method = data[pos + 16]
        compressed, plain = struct.unpack_from("<II", data, pos + 17)
        if compressed < 9 or pos + 16 + compressed > len(data) or plain > 1 << 30:
            return None
        payload = data[pos + _HEADER : pos + 16 + compressed]
        try:
            if method == _NONE:
                block = payload
            elif method == _LZ4:
                block = lz4.block.decompress(payload, uncompressed_size=plain)
            elif method == _ZSTD:
                block = zstd.decompress(payload)
            else:
                return None
        except (lz4.block.LZ4BlockError, zstd.ZstdError):
            return None
        if len(block) != plain:
            return None
        out += block
        pos += 16 + compressed
    return bytes(out)


@dataclass
class ScanResult:
    files: int = 0
    decompressed: int = 0  # files that were ClickHouse compressed streams
    found: dict[str, list[str]] = field(default_factory=dict)  # needle -> files holding it

    def holding(self, needle: str) -> list[str]:
        return self.found.get(needle, [])


def scan(roots: Iterable[Path], needles: Iterable[str]) -> ScanResult:
    """Every file under ``roots`` (files given directly are read too) searched for needles."""
    wanted = {n: n.encode("utf-8") for n in needles}
    result = ScanResult(found={n: [] for n in wanted})
    for root in roots:
        for path in _files(Path(root)):
            try:
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                continue  # removed while we walked, or not ours to read
            result.files += 1
            texts = [data]
            plain = decompress_clickhouse(data)
            if plain is not None:
                result.decompressed += 1
                texts.append(plain)
            for needle, raw in wanted.items():
                if any(raw in text for text in texts):
                    result.found[needle].append(str(path))
    return result


def _files(root: Path) -> Iterable[Path]:
    if root.is_file():
        yield root
        return
    for folder, _dirs, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                yield path
