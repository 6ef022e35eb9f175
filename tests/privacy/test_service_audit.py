"""The differencing auditor against the real service: property-based traffic sent as CMCD
reports over HTTP to a running StreamTally (real aiohttp server on 127.0.0.1, real
ClickHouse HTTP server), with a test clock so that hours and days pass in seconds.

After every minute of traffic the service's own flush runs (at the test clock's time) and
the account's whole export is read back: one *release*. The auditor then tries to isolate
fewer than k viewers in every row, version and single-step difference of rows
(tests/privacy/auditor.py). At the end the stats API, realtime and the streams list are
checked against the export: one number, one value, whichever way it is read.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import clickhouse_connect
import orjson
import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from aggregator.app import RUNNER_OPTIONS, create_app
from aggregator.service import SERVICE
from collector.app import PIPELINE
from tests.conftest import ChDatabase, ClickHouseProcess
from tests.integration.conftest import CHROME_UA, Running, make_configs
from tests.privacy.auditor import Auditor, Row, RowKey
from tests.privacy.traffic import T0, Session, traffic

ANDROID_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Mobile Safari/537.36"
)
UAS = {"desktop": CHROME_UA, "mobile": ANDROID_UA}
# public addresses whose country the service derives (checked, not assumed: see _viewers)
IPS = ("81.2.69.{n}", "2.16.{n}.1", "8.8.{n}.8", "193.0.{n}.1", "5.44.{n}.1", "24.48.{n}.1")


@dataclass
class Clock:
    now: float = float(T0)

    def __call__(self) -> float:
        return self.now


@dataclass
class Audited:
    running: Running
    clock: Clock
    epoch: itertools.count[int]


@pytest.fixture(scope="module")
async def audited(
    tmp_path_factory: pytest.TempPathFactory, clickhouse_server: ClickHouseProcess
) -> AsyncIterator[Audited]:
    """One service for all examples: each example is a new account, days later."""
    clock = Clock()
    data_dir: Path = tmp_path_factory.mktemp("audit") / "data"
    database = f"audit_{uuid.uuid4().hex[:12]}"
    client = clickhouse_connect.get_client(host=clickhouse_server.host, port=clickhouse_server.port)
    client.command(f"CREATE DATABASE {database}")
    ch = ChDatabase(clickhouse_server.url, database)
    collector_config, aggregator_config = make_configs(
        data_dir, ch, provisional_seconds=0.05, rate_limit_per_second=100_000.0
    )
    app = await create_app(collector_config, aggregator_config, clock=clock)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    async with aiohttp.ClientSession() as http:
        yield Audited(
            Running(str(server.make_url("")).rstrip("/"), app, http, data_dir, ch),
            clock,
            itertools.count(0),
        )
    await server.close()
    client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    client.close()


def _line(
    session: Session, n: int, at_ms: int, sta: str, extra: tuple[tuple[str, Any], ...]
) -> str:
    keys: dict[str, str] = {
        "cid": f'"{session.atom.stream}"',
        "e": "e" if sta == "f" else "ps",
        "sid": f'"{session.sid}"',
        "sn": str(n),
        "sta": sta,
        "ts": str(at_ms),
        "v": "2",
    }
    for key, value in extra:
        keys[key] = f'("{value}")' if key == "ec" else str(value)
    return ",".join(f"{k}={v}" for k, v in sorted(keys.items()))


def _viewers(audited: Audited, sessions: list[Session], epoch: int) -> dict[int, tuple[str, str]]:
    """An (IP, user agent) per viewer, whose derived country and device are the atom's."""
    strip = audited.running.app[PIPELINE].stripper.strip
    pool: dict[str, list[str]] = {}
    for template in IPS:
        for n in range(1, 200):
            ip = template.format(n=n)
            pool.setdefault(strip(ip, CHROME_UA).dimensions().country, []).append(ip)
    out: dict[int, tuple[str, str]] = {}
    for s in sessions:
        a = s.atom
        if a.viewer not in out:
            ips = pool[_COUNTRY_OF[a.dim("country")]]
            out[a.viewer] = (ips[(a.viewer + 20 * epoch) % len(ips)], UAS[a.dim("device")])
    return out


# the traffic's abstract countries -> countries that the address pool above yields
_COUNTRY_OF = {"DE": "GB", "FR": "NL", "US": "US"}


def _as_served(
    audited: Audited, sessions: list[Session], offset: int, who: dict[int, tuple[str, str]]
) -> list[Session]:
    """The sessions as the service will see them: shifted by ``offset`` days, with the
    dimensions the service derives from each viewer's address and user agent."""
    strip = audited.running.app[PIPELINE].stripper.strip
    out = []
    for s in sessions:
        a = s.atom
        ip, ua = who[a.viewer]
        d = strip(ip, ua).dimensions(a.dim("player"))
        dims = tuple(
            (name, getattr(d, name)) for name in ("country", "device", "os", "browser", "player")
        )
        moved = replace(a, minute=a.minute + offset * 1440, dims=dims)
        out.append(replace(s, atom=moved, sid=f"{s.sid}e{offset}"))
    return out


async def _export(running: Running, token: str) -> dict[RowKey, Row]:
    resp = await running.http.get(
        running.url + "/v1/export",
        params={"format": "ndjson"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200, await resp.text()
    out: dict[RowKey, Row] = {}
    for line in (await resp.read()).splitlines()[1:]:
        r = orjson.loads(line)
        ws = int(
            datetime.fromisoformat(str(r["window_start"]).replace(" ", "T"))
            .replace(tzinfo=UTC)
            .timestamp()
        )
        out[(r["granularity"], ws, r["stream"], r["breakdown"], r["value"])] = Row.from_api(r)
    return out


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sessions=traffic(max_viewers=10), k=st.integers(2, 3))
async def test_nothing_the_service_releases_isolates_fewer_than_k_viewers(
    audited: Audited, sessions: list[Session], k: int
) -> None:
    epoch = next(audited.epoch)
    offset = 3 * epoch  # days: every example starts on a fresh day, time only moves on
    running = audited.running
    account = await running.create_account(name=f"audit-{epoch}", k=k)
    who = _viewers(audited, sessions, epoch)
    served = _as_served(audited, sessions, offset, who)

    async def realtime(release: dict[RowKey, Row], minute: int) -> None:
        await _realtime_agrees(running, account["api_token"], release, minute)

    releases = await drive(audited, account, served, who, by_arrival=False, after=realtime)

    note(f"{len(releases[-1])} rows, {len(who)} viewers, k={k}")
    violations = Auditor([s.atom for s in served], k).audit(releases)
    assert not violations, "\n".join(map(str, violations[:10]))
    await _same_numbers_everywhere(running, account["api_token"], releases[-1], served)


async def _realtime_agrees(
    running: Running, token: str, stored: dict[RowKey, Row], minute: int
) -> None:
    """/v1/realtime's last minutes are the stored minute rows, added up over streams."""
    resp = await running.http.get(
        running.url + "/v1/realtime",
        params={"minutes": "3"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 200, await resp.text()
    for point in (await resp.json())["series"]:
        ws = int(datetime.fromisoformat(point["window_start"]).timestamp())
        rows = [r for (g, w, _s, b, _v), r in stored.items() if g == "minute" and w == ws and not b]
        if not rows:
            assert point["views"] is None
            continue
        assert point["views"] == sum(r.views for r in rows)
        assert point["failures"] == sum(r.failures for r in rows)
        assert point["concurrent_viewers"] == sum(r.peak for r in rows)


async def _same_numbers_everywhere(
    running: Running, token: str, stored: dict[RowKey, Row], served: list[Session]
) -> None:
    """The stats API, at every granularity and breakdown, shows exactly the exported rows;
    realtime's minutes are the minute rows added up over streams."""
    auth = {"Authorization": f"Bearer {token}"}
    minutes = [s.atom.minute for s in served]
    start = datetime.fromtimestamp(min(minutes) * 60 - 86_400, UTC).isoformat()
    end = datetime.fromtimestamp(max(minutes) * 60 + 2 * 86_400, UTC).isoformat()
    for granularity in ("minute", "hour", "day"):
        for by in ("", "country", "device", "os", "browser", "player"):
            params = {"granularity": granularity, "from": start, "to": end}
            if by:
                params["by"] = by
            resp = await running.http.get(running.url + "/v1/stats", params=params, headers=auth)
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            shown = {
                (
                    granularity,
                    int(datetime.fromisoformat(r["window_start"]).timestamp()),
                    r["stream"],
                    by,
                    r[by] if by else "",
                ): (r["views"], r["unique_viewers"], r["failures"], r["exits_before_start"])
                for r in body["rows"]
            }
            expected = {
                key: (row.views, row.unique_viewers, row.failures, row.exits)
                for key, row in stored.items()
                if key[0] == granularity and key[3] == by
            }
            assert shown == expected, (granularity, by)
    resp = await running.http.get(
        running.url + "/v1/streams", params={"from": start, "to": end}, headers=auth
    )
    assert resp.status == 200, await resp.text()
    listed = {s["stream"]: s["views"] for s in (await resp.json())["streams"]}
    days: dict[str, int] = {}
    for (g, _ws, stream, b, _v), row in stored.items():
        if g == "day" and not b:
            days[stream] = days.get(stream, 0) + row.views
    assert listed == days


async def drive(
    svc: Audited,
    account: dict[str, Any],
    served: list[Session],
    who: dict[int, tuple[str, str]],
    *,
    by_arrival: bool,
    after: Callable[[dict[RowKey, Row], int], Awaitable[None]] | None = None,
) -> list[dict[RowKey, Row]]:
    """Post the served sessions' reports minute by minute on the test clock, let the
    service flush after each minute (and once past the hour and the day), and read the
    export back every time. ``by_arrival``: a report goes in the minute it arrives in
    (else in its session's first minute); ``after``: a check of each release."""
    running, clock = svc.running, svc.clock
    lines: dict[int, list[tuple[int, Session, int, str, tuple[tuple[str, Any], ...]]]] = {}
    for s in served:
        base = s.atom.minute * 60_000
        for n, (at_ms, sta, extra) in enumerate(s.steps):
            at = base + at_ms
            minute = at // 60_000 if by_arrival else s.atom.minute
            lines.setdefault(minute, []).append((at, s, n, sta, extra))
    releases: list[dict[RowKey, Row]] = []
    last = max(lines)
    for minute in sorted(set(lines) | {last + 3, (last // 1440 + 1) * 1440 + 1}):
        for at_ms, s, n, sta, extra in sorted(lines.get(minute, []), key=lambda x: x[0]):
            clock.now = at_ms / 1000
            ip, ua = who[s.atom.viewer]
            resp = await running.post(
                account["embed_key"],
                _line(s, n, at_ms, sta, extra) + "\n",
                ip=ip,
                ua=ua,
                player=s.atom.dim("player"),
            )
            assert resp.status == 204, await resp.text()
        clock.now = (minute + 1) * 60 + 3
        await running.app[SERVICE].flush()
        releases.append(await _export(running, account["api_token"]))
        if after is not None:
            await after(releases[-1], minute)
    return releases
