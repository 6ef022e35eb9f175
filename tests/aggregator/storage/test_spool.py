"""Spool: bounded, checksummed, fsynced on-disk queue of batches; survives restarts and crashes."""

from __future__ import annotations

import math
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from aggregator.storage.spool import (
    HEADER_SIZE,
    MAGIC,
    Batch,
    Spool,
    SpoolFull,
    decode_record,
    encode_record,
)
from collector.errors import StorageError

ROOT = Path(__file__).resolve().parents[3]
COLUMNS = ("account_id", "window_start", "views", "hist", "by_cdn", "ratio")
START = datetime(2026, 11, 24, 1, 2, tzinfo=UTC)


def batch(i: int, rows: int = 2, table: str = "cells") -> Batch:
    window = START + timedelta(minutes=i)
    return Batch(
        table,
        COLUMNS,
        [
            ["acc_x", window, i * 10 + r, [i, r, 3], {"cdn-a": i, "cdn-b": r}, 0.1 * (i + r)]
            for r in range(rows)
        ],
        f"{table}:acc_x:minute:{window.isoformat()}:v{i}",
    )


def records(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.rec"))


def corrupt_count() -> float:
    return REGISTRY.get_sample_value("streamtally_spool_corrupt_records_total") or 0.0


def drain_all(spool: Spool) -> list[Batch]:
    out = []
    while (head := spool.peek()) is not None:
        out.append(head)
        spool.pop()
    return out


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool(tmp_path / "spool", 1 << 20) as opened:
        yield opened


# ---- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Zürich ✓ \x00 \"quoted\" {'$dt': 'x'}", id="str"),
        pytest.param(2**64 - 1, id="uint64-max"),
        pytest.param(-(2**63), id="int64-min"),
        pytest.param(0.1, id="float-0.1"),
        pytest.param(5e-324, id="float-subnormal"),
        pytest.param(1.7976931348623157e308, id="float-max"),
        pytest.param(-0.0, id="float-negative-zero"),
        pytest.param(float("inf"), id="float-inf"),
        pytest.param(float("-inf"), id="float-minus-inf"),
        pytest.param([1, 2, 2**63], id="list-int"),
        pytest.param([], id="list-empty"),
        pytest.param({"cdn-a": 3, "$dt": 4, "$map": 5}, id="dict-with-tag-like-keys"),
        pytest.param({"$dt": "2026-11-24T01:02:00+00:00"}, id="dict-looking-like-a-datetime"),
        pytest.param({}, id="dict-empty"),
        pytest.param(datetime(2026, 11, 24, 1, 2, 3, 456789, tzinfo=UTC), id="datetime-utc"),
        pytest.param(
            datetime(2026, 11, 24, 1, 2, tzinfo=timezone(timedelta(hours=-5))), id="datetime-offset"
        ),
        pytest.param(True, id="bool"),
        pytest.param(None, id="null"),
    ],
)
def test_values_round_trip_exactly(spool: Spool, value: Any) -> None:
    written = Batch("cells", ("v",), [[value]], "t")
    spool.append(written)
    read = spool.peek()
    assert read == written
    assert read is not None
    got = read.rows[0][0]
    assert type(got) is type(value)
    if isinstance(value, float):
        assert math.copysign(1.0, got) == math.copysign(1.0, value)  # -0.0 stays -0.0
    if isinstance(value, datetime):
        assert got.utcoffset() == value.utcoffset()


def test_nan_round_trips(spool: Spool) -> None:
    spool.append(Batch("cells", ("v",), [[float("nan")]], "t"))
    read = spool.peek()
    assert read is not None
    assert math.isnan(read.rows[0][0])


values = st.one_of(
    st.text(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=5),
    st.dictionaries(st.text(max_size=8), st.integers(min_value=0, max_value=2**64 - 1), max_size=4),
    st.datetimes(timezones=st.just(UTC)),
)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.lists(values, min_size=1, max_size=4), max_size=4),
    table=st.text(min_size=1, max_size=10),
    token=st.text(max_size=40),
)
def test_any_batch_round_trips_through_a_record(
    rows: list[list[Any]], table: str, token: str
) -> None:
    original = Batch(table, tuple(f"c{i}" for i in range(4)), rows, token)
    assert decode_record(encode_record(original)) == original


def test_batches_come_out_oldest_first_and_pop_removes_them(spool: Spool) -> None:
    assert spool.peek() is None
    assert len(spool) == 0
    for i in range(5):
        spool.append(batch(i))
    assert len(spool) == 5
    assert spool.peek() == batch(0)
    assert spool.peek() == batch(0)  # peek does not consume
    spool.pop()
    assert spool.peek() == batch(1)
    assert drain_all(spool) == [batch(i) for i in range(1, 5)]
    assert len(spool) == 0
    assert spool.bytes() == 0
    assert records(spool.folder) == []
    spool.pop()  # popping an empty spool is harmless
    assert len(spool) == 0


def test_bytes_and_gauges_match_the_files_on_disk(spool: Spool) -> None:
    for i in range(3):
        spool.append(batch(i, rows=i + 1))
    on_disk = sum(path.stat().st_size for path in records(spool.folder))
    assert spool.bytes() == on_disk
    assert REGISTRY.get_sample_value("streamtally_spool_bytes") == on_disk
    assert REGISTRY.get_sample_value("streamtally_spool_batches") == 3
    spool.pop()
    on_disk = sum(path.stat().st_size for path in records(spool.folder))
    assert spool.bytes() == on_disk
    assert REGISTRY.get_sample_value("streamtally_spool_batches") == 2


# ---- what the files hold ----------------------------------------------------------------------


def test_spool_file_holds_exactly_the_batch_and_nothing_else(spool: Spool) -> None:
    canary = "CANARY-7f3a9c"
    written = Batch(
        "cells",
        ("account_id", "device", "views", "window_start"),
        [["acc_x", canary, 42, START]],
        "cells:acc_x:minute:2026-11-24T01:02:00:v1",
    )
    spool.append(written)
    assert sorted(p.name for p in spool.folder.iterdir()) == ["00000000000000000001.rec", "LOCK"]
    assert (spool.folder / "LOCK").read_bytes() == b""
    data = records(spool.folder)[0].read_bytes()
    assert data.count(canary.encode()) == 1
    magic, length, crc = data[:4], data[4:8], data[8:12]
    payload = data[HEADER_SIZE:]
    assert magic == MAGIC
    assert int.from_bytes(length, "big") == len(payload)
    assert int.from_bytes(crc, "big") == zlib.crc32(payload)
    assert orjson.loads(payload) == {
        "v": 1,
        "table": "cells",
        "columns": ["account_id", "device", "views", "window_start"],
        "rows": [["acc_x", canary, 42, {"$dt": "2026-11-24T01:02:00+00:00"}]],
        "token": "cells:acc_x:minute:2026-11-24T01:02:00:v1",
    }
    assert data == encode_record(written)


# ---- limits -----------------------------------------------------------------------------------


def test_full_spool_refuses_and_keeps_everything_until_room_is_freed(tmp_path: Path) -> None:
    size = len(encode_record(batch(0)))
    with Spool(tmp_path / "spool", 3 * size + size // 2) as spool:
        for i in range(3):
            spool.append(batch(i))
        assert not spool.full()
        with pytest.raises(SpoolFull, match="full"):
            spool.append(batch(3))
        assert isinstance(SpoolFull("x"), StorageError)
        assert spool.full()
        assert len(spool) == 3
        assert [p.name for p in records(spool.folder)] == [f"{i:020d}.rec" for i in (1, 2, 3)]
        assert not list(spool.folder.glob("*.tmp"))
        spool.pop()
        assert not spool.full()
        spool.append(batch(3))
        assert drain_all(spool) == [batch(1), batch(2), batch(3)]


def test_batch_larger_than_the_limit_is_refused_even_when_empty(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool", 4096) as spool:
        with pytest.raises(SpoolFull):
            spool.append(batch(0, rows=200))
        assert len(spool) == 0
        assert spool.full()  # stays refused until something frees room: the caller sees 503


def test_full_at_the_limit(tmp_path: Path) -> None:
    size = len(encode_record(batch(0)))
    with Spool(tmp_path / "spool", size) as spool:
        spool.append(batch(0))
        assert spool.full()


# ---- restarts and crashes ---------------------------------------------------------------------


def test_spool_survives_a_restart_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    first = Spool(folder, 1 << 20)
    for i in range(4):
        first.append(batch(i))
    first.pop()
    first.close()
    del first

    second = Spool(folder, 1 << 20)
    assert len(second) == 3
    assert second.bytes() == sum(p.stat().st_size for p in records(folder))
    second.append(batch(4))  # numbering goes on after the newest record
    second.close()

    with Spool(folder, 1 << 20) as third:
        assert drain_all(third) == [batch(i) for i in range(1, 5)]


def test_a_second_process_cannot_use_the_same_folder(spool: Spool) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from aggregator.storage.spool import Spool
        from collector.errors import StorageError
        try:
            Spool(sys.argv[1], 4096)
        except StorageError as exc:
            print("refused:", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(spool.folder)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.startswith("refused:")
    assert "in use" in result.stdout


def test_closed_spool_refuses_use(spool: Spool) -> None:
    spool.close()
    with pytest.raises(StorageError, match="closed"):
        spool.append(batch(0))


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(0, id="empty-file"),
        pytest.param(3, id="inside-magic"),
        pytest.param(HEADER_SIZE - 1, id="inside-header"),
        pytest.param(HEADER_SIZE, id="header-only"),
        pytest.param(HEADER_SIZE + 1, id="one-payload-byte"),
        pytest.param(-1, id="last-byte-missing"),
    ],
)
def test_torn_last_record_is_dropped_and_the_rest_kept(tmp_path: Path, cut: int) -> None:
    folder = tmp_path / "spool"
    with Spool(folder, 1 << 20) as spool:
        for i in range(3):
            spool.append(batch(i))
    last = records(folder)[-1]
    last.write_bytes(last.read_bytes()[:cut])
    before = corrupt_count()

    with Spool(folder, 1 << 20) as reopened:
        assert corrupt_count() == before + 1
        assert not last.exists()
        assert reopened.bytes() == sum(p.stat().st_size for p in records(folder))
        reopened.append(batch(9))
        assert drain_all(reopened) == [batch(0), batch(1), batch(9)]


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(0, id="magic"),
        pytest.param(5, id="length"),
        pytest.param(9, id="checksum"),
        pytest.param(HEADER_SIZE, id="payload-start"),
        pytest.param(-2, id="payload-end"),
    ],
)
def test_flipped_byte_drops_only_that_record(tmp_path: Path, position: int) -> None:
    folder = tmp_path / "spool"
    with Spool(folder, 1 << 20) as spool:
        for i in range(3):
            spool.append(batch(i))
    middle = records(folder)[1]
    data = bytearray(middle.read_bytes())
    data[position] ^= 0x20
    middle.write_bytes(bytes(data))
    before = corrupt_count()

    with Spool(folder, 1 << 20) as reopened:
        assert corrupt_count() == before + 1
        assert drain_all(reopened) == [batch(0), batch(2)]


def test_record_with_valid_checksum_but_not_a_batch_is_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    with Spool(folder, 1 << 20) as spool:
        spool.append(batch(0))
    payload = b'{"v":1,"table":"cells","rows":"nope"}'
    header = MAGIC + len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big")
    (folder / f"{2:020d}.rec").write_bytes(header + payload)
    before = corrupt_count()
    with Spool(folder, 1 << 20) as reopened:
        assert corrupt_count() == before + 1
        assert drain_all(reopened) == [batch(0)]


def test_record_damaged_after_opening_is_skipped_not_fatal(spool: Spool) -> None:
    for i in range(3):
        spool.append(batch(i))
    records(spool.folder)[0].write_bytes(b"garbage")
    before = corrupt_count()
    assert drain_all(spool) == [batch(1), batch(2)]
    assert corrupt_count() == before + 1


def test_unfinished_append_leftover_is_removed_and_not_returned(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    with Spool(folder, 1 << 20) as spool:
        spool.append(batch(0))
    record = encode_record(batch(1))
    (folder / f"{2:020d}.tmp").write_bytes(record[: len(record) // 2])
    with Spool(folder, 1 << 20) as reopened:
        assert not list(folder.glob("*.tmp"))
        assert drain_all(reopened) == [batch(0)]


APPENDER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {root!r})
    from datetime import UTC, datetime
    from aggregator.storage.spool import Batch, Spool

    spool = Spool(sys.argv[1], 1 << 30)
    i = 0
    while True:
        rows = [["acc_x", datetime(2026, 11, 24, tzinfo=UTC), i, list(range(50))]] * 200
        spool.append(Batch("cells", ("a", "w", "i", "h"), rows, f"t{{i}}"))
        print(i, flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("acknowledged", [1, 7, 20])
def test_sigkill_while_appending_keeps_every_acknowledged_batch(
    tmp_path: Path, acknowledged: int
) -> None:
    folder = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-c", APPENDER.format(root=str(ROOT)), str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    seen = 0
    buffered = b""
    deadline = time.monotonic() + 30
    try:
        while seen < acknowledged:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the appender did not acknowledge in time"
            ready, _, _ = select.select([child.stdout], [], [], remaining)
            if ready:
                chunk = os.read(child.stdout.fileno(), 4096)
                assert chunk, child.stderr.read() if child.stderr else "appender exited"
                buffered += chunk
                seen = buffered.count(b"\n")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        buffered += child.stdout.read()  # acknowledgements printed before the kill landed
        child.stdout.close()
        if child.stderr:
            child.stderr.close()

    with Spool(folder, 1 << 30) as reopened:
        kept = drain_all(reopened)
    # Every acknowledged append is there; at most the one in flight got in as well.
    acked = buffered.count(b"\n")
    assert acked >= acknowledged
    assert acked <= len(kept) <= acked + 1
    assert [b.token for b in kept] == [f"t{i}" for i in range(len(kept))]
    assert all(len(b.rows) == 200 and b.rows[0][2] == i for i, b in enumerate(kept))
    assert not list(folder.glob("*.tmp"))
