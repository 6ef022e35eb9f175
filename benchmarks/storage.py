"""What an hour of traffic costs in storage and flushes: rows and bytes written per hour,
the time of a flush, memory per active session and per viewer in open cells.

    python -m benchmarks.storage [--viewers 2000] [--streams 12] [--minutes 60] [--privacy dp]

Drives the real aggregator (``aggregator.service.Service``) with synthetic events whose
arrival times step through ``--minutes`` minutes, flushing every minute as the service
does (hour and day cells provisionally every 5 minutes), into an embedded ClickHouse in a
temporary folder; then closes the UTC day (one more flush, timed on its own: in dp mode the
day's parts are noised and released only then) and reads ``system.parts`` for the rows and
bytes of the cells table. Rows and bytes per hour include the day's close.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from aggregator.config import AggregatorConfig
from aggregator.service import Service
from aggregator.storage.accounts_store import AccountStore
from aggregator.storage.migrate import migrate
from aggregator.storage.store import Store
from collector.config import CollectorConfig
from collector.handover import Dimensions, Event

COUNTRIES = ("US", "DE", "FR", "GB", "BR", "IN", "JP", "NL", "ES", "IT")
DEVICES = ("desktop", "mobile", "tv", "tablet")
OSES = ("Windows", "macOS", "Android", "iOS", "Linux")
BROWSERS = ("Chrome", "Safari", "Firefox", "Edge")
PLAYERS = ("hls.js", "shaka", "html5")


async def run(
    viewers: int, streams: int, minutes: int, seed: int, privacy: str = "k"
) -> dict[str, float]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        store = await Store.connect(url=None, data_dir=data_dir)
        await migrate(store)
        accounts = AccountStore(store)
        await accounts.load()
        account, _ = await accounts.create("bench", ["*"], k=10, privacy={"mode": privacy})
        service = Service(
            store=store,
            accounts=accounts,
            data_dir=data_dir,
            collector_config=CollectorConfig(data_dir=data_dir),
            config=AggregatorConfig(provisional_seconds=300.0),
        )
        weights = [1 / (rank + 1) for rank in range(streams)]
        population = []
        for v in range(viewers):
            dims = Dimensions(
                country=rng.choice(COUNTRIES), device=rng.choice(DEVICES), os=rng.choice(OSES),
                browser=rng.choice(BROWSERS), player=rng.choice(PLAYERS),
            )  # fmt: skip
            stream = rng.choices(range(streams), weights)[0]
            population.append((v + 1, rng.getrandbits(60), dims, f"stream-{stream}"))
        start = (time.time() // 3600 - 2) * 3600  # a past hour the benchmark owns
        if privacy == "dp":
            start = account.privacy_from  # dp applies from the next UTC day
        service._last_provisional = start
        # As `streamtally serve` does once started (aggregator/cli.py): what is loaded by
        # then lives as long as the process and stays out of the cyclic GC's scans.
        gc.collect()
        gc.freeze()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        events = written = 0
        per_session = 0.0
        flush_times: list[float] = []
        peak_sessions = 0
        for minute in range(minutes):
            t0 = start + minute * 60
            for second in range(0, 60, 10):  # every viewer reports every 10 s (hls.js's `t`)
                batch = [
                    Event(account.account_id, session=s, viewer=viewer, arrival=t0 + second,
                          stream=stream, kind="t" if minute or second else "ps", dims=dims,
                          ts_ms=int((minute * 60 + second) * 1000), seq=minute * 6 + second // 10,
                          state="p", bitrate_kbps=3000)
                    for viewer, s, dims, stream in population
                ]  # fmt: skip
                service.submit(batch)
                events += len(batch)
            if minute == 0:
                traced = tracemalloc.get_traced_memory()[0] - base
                peak_sessions = service.aggregator.stats()["active_sessions"]
                per_session = traced / max(1, peak_sessions)
                tracemalloc.stop()
            started = time.perf_counter()
            report = await service.flush(t0 + 62)
            flush_times.append(time.perf_counter() - started)
            written += report.rows + report.tombstones
        service.aggregator.end_all(start + minutes * 60 + 62)
        report = await service.flush(start + minutes * 60 + 62, everything=True)
        written += report.rows + report.tombstones
        # The UTC day closes: its day rows are final (in dp mode: the day's parts get their
        # noise and are released only now, with 60 % of the budget; see
        # aggregator/release/noise.py).
        day_end = start - start % 86_400 + 86_400
        started = time.perf_counter()
        report = await service.flush(max(day_end, start + minutes * 60) + 62)
        day_close_ms = (time.perf_counter() - started) * 1000
        day_close_rows = report.rows + report.tombstones
        written += day_close_rows
        await store.command("OPTIMIZE TABLE cells FINAL")
        [(rows, compressed, uncompressed)] = await store.query_rows(
            "SELECT sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
            "FROM system.parts WHERE database = {db:String} AND table = 'cells' AND active",
            {"db": store.database},
        )
        await store.close()
    hours = minutes / 60
    flush_times.sort()
    return {
        "viewers": viewers,
        "events": events,
        "active_sessions": peak_sessions,
        "bytes_per_active_session_in_aggregator": round(per_session),
        "rows_written_per_hour": round(written / hours),
        "rows_kept_per_hour_after_merge": round(rows / hours),
        "compressed_bytes_per_hour": round(compressed / hours),
        "uncompressed_bytes_per_hour": round(uncompressed / hours),
        "flush_ms_median": round(flush_times[len(flush_times) // 2] * 1000, 1),
        "flush_ms_p99": round(flush_times[int(0.99 * (len(flush_times) - 1))] * 1000, 1),
        "flush_ms_max": round(flush_times[-1] * 1000, 1),
        "day_close_flush_ms": round(day_close_ms, 1),
        "day_close_rows_written": day_close_rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=12)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--privacy", choices=("k", "dp"), default="k")
    args = parser.parse_args()
    result = asyncio.run(run(args.viewers, args.streams, args.minutes, args.seed, args.privacy))
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value:,}")


if __name__ == "__main__":
    main()
