"""The counting and release code driven in-process, the way the service drives it.

Minutes close a couple of seconds after they end; after every minute that saw traffic the
service's flush runs: closed minutes go to the release, open hours and days are settled
and rewritten (the service does that every ``provisional_seconds``; here after every
minute, the attacker's best case: the most versions). Every row written lands in a dict
that stands in for ClickHouse, and a copy of it after each flush is one *release*.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aggregator.counting.cells import CellRow
from aggregator.counting.windows import Aggregator
from collector.handover import Dimensions, Event
from tests.privacy.auditor import Row, RowKey
from tests.privacy.traffic import T0, Session

ACCOUNT = "acc-audit"
GRACE = 3


def events(sessions: Sequence[Session]) -> list[Event]:
    out: list[Event] = []
    for n, s in enumerate(sessions):
        a = s.atom
        base_ms = a.minute * 60_000
        for at_ms, sta, extra in s.steps:
            fields = dict(extra)
            out.append(
                Event(
                    account_id=ACCOUNT,
                    session=n + 1,
                    viewer=a.viewer + 1,
                    arrival=(base_ms + at_ms) / 1000,
                    stream=a.stream,
                    kind="e" if sta == "f" else "ps",
                    dims=Dimensions(**dict(a.dims)),
                    ts_ms=base_ms + at_ms,
                    state=sta,
                    startup_ms=int(fields["msd"]) if "msd" in fields else None,
                    latency_ms=int(fields["ltc"]) if "ltc" in fields else None,
                    error_code=str(fields["ec"]) if "ec" in fields else None,
                )
            )
    out.sort(key=lambda e: e.arrival)
    return out


def run(sessions: Sequence[Session], k: int) -> list[dict[RowKey, Row]]:
    """Every release of ``sessions`` with ``k``, in order.

    Runs the code before the release rewrite too (hour and day cells anonymised on their
    own, ``aggregator.release.kanon.anonymise``), so that the auditor can be shown failing there."""
    try:
        from aggregator.release.ledger import Ledger
    except ImportError:  # the code before the release rewrite
        return _run_before(sessions, k)
    agg = Aggregator(idle_seconds=120)
    ledger = Ledger(lambda _account: k)
    stored: dict[RowKey, Row] = {}
    releases: list[dict[RowKey, Row]] = []
    for minute, batch in _minutes(sessions):
        agg.submit(batch)
        now = (minute + 1) * 60 + GRACE
        agg.tick(now)
        for raw in agg.take_closed():
            ledger.add_minute(raw)
        ledger.advance(agg.open_minute * 60)
        due = ledger.groups(settle_open=True)
        for g in due:
            _store(stored, g.granularity, g.window_start.timestamp(), g.to_rows())
        ledger.written(due)
        releases.append(dict(stored))
    return releases


def _minutes(sessions: Sequence[Session]) -> list[tuple[int, list[Event]]]:
    """The events by arrival minute, plus the minutes after that close the hours and day."""
    by_minute: dict[int, list[Event]] = {}
    for ev in events(sessions):
        by_minute.setdefault(int(ev.arrival // 60), []).append(ev)
    last = max(by_minute) if by_minute else T0 // 60
    flush_at = sorted(set(by_minute) | {last + 5, (T0 + 2 * 86_400) // 60})
    return [(m, by_minute.get(m, [])) for m in flush_at]


def _store(stored: dict[RowKey, Row], granularity: str, start: float, rows: list[CellRow]) -> None:
    """A group rewritten: its rows replace the group's earlier ones (gone keys: tombstones)."""
    for key in [k for k in stored if k[0] == granularity and k[1] == int(start)]:
        del stored[key]
    for row in rows:
        key = row.key
        stored[(granularity, int(start), key.stream, key.breakdown, key.value)] = Row.from_api(
            {**{c: getattr(row, c) for c in _FIELDS}, "exits_before_start": row.exits_before_start}
        )


def _run_before(sessions: Sequence[Session], k: int) -> list[dict[RowKey, Row]]:
    from aggregator.release.kanon import anonymise  # type: ignore[attr-defined]

    agg: Any = Aggregator(idle_seconds=120)
    stored: dict[RowKey, Row] = {}
    releases: list[dict[RowKey, Row]] = []
    for minute, batch in _minutes(sessions):
        agg.submit(batch)
        now = (minute + 1) * 60 + GRACE
        groups = agg.groups(now)
        for g in groups:
            _store(stored, g.granularity, g.window_start.timestamp(), anonymise([g], lambda _a: k))
        agg.release([g for g in groups if g.closed])
        releases.append(dict(stored))
    return releases


_FIELDS = (
    "views",
    "playing_seconds",
    "rebuffer_count",
    "rebuffer_seconds",
    "failures",
    "unique_viewers",
    "failures_by_code",
    "latency_ms_sum",
    "latency_count",
    "startup_hist",
    "concurrent_peak",
)
