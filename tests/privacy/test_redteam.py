"""Red-team attacks on the rebuilt release (aggregator/release/ledger.py, kanon.py, values.py).

Each test builds traffic by hand, runs the counting and release code the way the service
does (as tests/privacy/inprocess.py does, but keeping every stored column, histogram
buckets and all), takes only what was released, derives a number from it the way an
attacker reading the stats API or the export would, and asserts that this number is NOT a
single viewer's (or fewer than k viewers') private data. A test that fails is an attack
that succeeded: its message says what was recovered.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from aggregator.counting.cells import CellRow
from aggregator.counting.histogram import bucket_of
from aggregator.counting.windows import Aggregator
from aggregator.release.ledger import Ledger
from collector.handover import Dimensions, Event
from tests.privacy.auditor import Atom, Auditor, Row, RowKey
from tests.privacy.inprocess import ACCOUNT, GRACE, _minutes, run
from tests.privacy.test_service_audit import (  # the real service, one for the module
    Audited,
    _as_served,
    _viewers,
    audited,  # noqa: F401  (the fixture)
    drive,
)
from tests.privacy.traffic import DE, FR, M0, T0, Session, dims, make_session, spans

FullKey = tuple[str, int, str, str, str]  # (granularity, window start, stream, breakdown, value)


def run_full(
    sessions: list[Session], k: int, extra: list[Event] | None = None
) -> list[dict[FullKey, CellRow]]:
    """Like tests.privacy.inprocess.run, but every release keeps the stored CellRows whole
    (startup histogram buckets, latency sums, codes), as the export returns them.
    ``extra``: events built by hand (fields the traffic helpers do not send, like ``br``),
    submitted in their arrival minute (which must also hold an event of ``sessions``)."""
    extra_events: dict[int, list[Event]] = {}
    for ev in extra or ():
        extra_events.setdefault(int(ev.arrival // 60), []).append(ev)
    agg = Aggregator(idle_seconds=120)
    ledger = Ledger(lambda _account: k)
    stored: dict[FullKey, CellRow] = {}
    releases: list[dict[FullKey, CellRow]] = []
    for minute, batch in _minutes(sessions):
        batch = [*batch, *extra_events.get(minute, [])]
        agg.submit(sorted(batch, key=lambda e: e.arrival))
        agg.tick((minute + 1) * 60 + GRACE)
        for raw in agg.take_closed():
            ledger.add_minute(raw)
        ledger.advance(agg.open_minute * 60)
        due = ledger.groups(settle_open=True)
        for g in due:
            start = int(g.window_start.timestamp())
            for key in [k for k in stored if k[0] == g.granularity and k[1] == start]:
                del stored[key]
            for row in g.to_rows():
                rk = row.key
                stored[(g.granularity, start, rk.stream, rk.breakdown, rk.value)] = row
        ledger.written(due)
        releases.append(dict(stored))
    return releases


def sess(
    n: int,
    viewer: int,
    minute: int,
    dims: tuple[tuple[str, str], ...] = DE,
    kind: str = "play",
    *,
    stream: str = "news",
    code: str = "x",
    latency: bool = True,
    startup_ms: int | None = None,
) -> Session:
    """Session ``n`` of ``viewer`` in minute ``M0 + minute``; without ``latency`` it sends
    no ``ltc``; ``startup_ms`` fixes its ``msd``."""
    sp = spans(n)
    if startup_ms is not None:
        sp["a"] = startup_ms
    s = make_session(n, viewer, stream, M0 + minute, dims, kind, code=code, **sp)
    if latency:
        return s
    steps = tuple(
        (t, sta, tuple(kv for kv in extra if kv[0] != "ltc")) for t, sta, extra in s.steps
    )
    return Session(replace(s.atom, latency_ms=None), s.sid, steps)


def minute_key(minute: int, breakdown: str = "", value: str = "") -> FullKey:
    return ("minute", T0 + 60 * minute, "news", breakdown, value)


def hour_key(breakdown: str = "", value: str = "") -> FullKey:
    return ("hour", T0, "news", breakdown, value)


# ---- values inside a cell: the stream total minus its published breakdown values -----------


def test_total_minus_breakdown_gives_back_a_lone_failure_code() -> None:
    """k = 5. Minute 1: five German viewers all fail with ``3016``; five French viewers, one
    of whom fails with ``3016`` too. Every row has >= k viewers and each shown code has
    >= k holders in its own row: total ``3016`` x6 (6 holders), DE ``3016`` x5. The French
    row shows ``failures = 1`` and hides its code (one holder). But total - DE = 1 failure
    with ``3016``: the one French failure's code, which a single viewer holds."""
    k = 5
    sessions = [
        *(sess(i, i, 1, DE, "fail", code="3016") for i in range(5)),
        sess(5, 5, 1, FR, "fail", code="3016"),
        *(sess(6 + i, 6 + i, 1, FR) for i in range(4)),
    ]
    rows = run_full(sessions, k)[-1]
    total, de, fr = (
        rows[minute_key(1)],
        rows[minute_key(1, "country", "DE")],
        rows[minute_key(1, "country", "FR")],
    )
    assert fr.failures == 0  # one failing viewer behind it: not shown (aggregator/release/sums.py)
    assert "3016" not in fr.failures_by_code  # the rule, row by row: one holder
    recovered = total.failures_by_code.get("3016", 0) - de.failures_by_code.get("3016", 0)
    assert recovered != fr.failures, (
        f"the lone French failure's code is 3016: total {total.failures_by_code} "
        f"- DE {de.failures_by_code} = {recovered} failure held by 1 viewer"
    )


def test_total_minus_breakdown_gives_back_a_lone_latency() -> None:
    """k = 5. Minute 1: five German viewers send a latency; of five French viewers only one
    does. Total latency (6 senders) and DE latency (5) are shown, FR's (1 sender) is not.
    total - DE = that one French viewer's latency sample, to the millisecond."""
    k = 5
    sessions = [
        *(sess(i, i, 1, DE) for i in range(5)),
        sess(5, 5, 1, FR),
        *(sess(6 + i, 6 + i, 1, FR, latency=False) for i in range(4)),
    ]
    victim = sessions[5].atom.latency_ms
    rows = run_full(sessions, k)[-1]
    total, de, fr = (
        rows[minute_key(1)],
        rows[minute_key(1, "country", "DE")],
        rows[minute_key(1, "country", "FR")],
    )
    assert fr.latency_count == 0  # the rule, row by row: one sender is not shown
    count = total.latency_count - de.latency_count
    recovered = round(total.latency_ms_sum - de.latency_ms_sum)
    assert (count, recovered) != (1, victim), (
        f"the lone French viewer's latency: total {total.latency_ms_sum}/{total.latency_count}"
        f" - DE {de.latency_ms_sum}/{de.latency_count} = {recovered} ms in 1 sample"
    )


def test_total_minus_breakdown_gives_back_a_lone_startup_bucket() -> None:
    """k = 3, startup histograms coarsened row by row. DE (6 viewers): three start in
    300 ms, three in 20 s -> two runs, shown as 300 ms: 3, 20 s: 3. FR (3 viewers): two in
    300 ms, one in 20 s -> one run, shown as 300 ms: 3 (the slow one is hidden). Total:
    300 ms x5, 20 s x4 -> two runs, shown as such. total - DE puts exactly one startup in
    the 20 s bucket: the one French viewer who waited 20 s."""
    k = 3
    fast, slow = 300, 20_000
    sessions = [
        *(sess(i, i, 1, DE, startup_ms=fast) for i in range(3)),
        *(sess(3 + i, 3 + i, 1, DE, startup_ms=slow) for i in range(3)),
        sess(6, 6, 1, FR, startup_ms=fast),
        sess(7, 7, 1, FR, startup_ms=fast),
        sess(8, 8, 1, FR, startup_ms=slow),
    ]
    rows = run_full(sessions, k)[-1]
    total, de, fr = (
        rows[minute_key(1)],
        rows[minute_key(1, "country", "DE")],
        rows[minute_key(1, "country", "FR")],
    )
    b = bucket_of(slow)
    assert fr.startup_hist[b] == 0  # the rule, row by row: FR's slow startup is not shown
    recovered = total.startup_hist[b] - de.startup_hist[b]
    assert not 0 < recovered < k, (
        f"French startups in the {slow} ms bucket: total {total.startup_hist[b]} - "
        f"DE {de.startup_hist[b]} = {recovered} (held by {recovered} viewer(s), k = {k})"
    )


def test_hour_total_minus_breakdown_gives_back_a_lone_latency() -> None:
    """The same difference one level up, through the hour's pool: minute 1 as in the
    latency attack; minute 2 a crowd with no French latency. The hour's total and DE rows
    carry shown latency from the minutes; hour total - hour DE is still the lone French
    sample (the French sample stays pooled and is never released on its own)."""
    k = 5
    sessions = [
        *(sess(i, i, 1, DE) for i in range(5)),
        sess(5, 5, 1, FR),
        *(sess(6 + i, 6 + i, 1, FR, latency=False) for i in range(4)),
        *(sess(20 + i, 20 + i, 2, DE) for i in range(5)),
        *(sess(30 + i, 30 + i, 2, FR, latency=False) for i in range(5)),
    ]
    victim = sessions[5].atom.latency_ms
    rows = run_full(sessions, k)[-1]
    total, de = rows[hour_key()], rows[hour_key("country", "DE")]
    count = total.latency_count - de.latency_count
    recovered = round(total.latency_ms_sum - de.latency_ms_sum)
    assert (count, recovered) != (1, victim), (
        f"hour: the lone French latency {recovered} ms in {count} sample"
    )


def test_days_final_other_code_minus_a_breakdowns_gives_back_a_lone_rare_code() -> None:
    """k = 3, codes that never reach k, shown on the day's last settle as ``(other)`` where
    their holders reach k. Minute 1: German viewers fail with codes A, B and E (one each),
    French viewer V3 fails with code C, two French viewers play. Day total ``(other)``: 4
    failures (4 holders), day DE ``(other)``: 3 (3 holders), FR hides its one. total - DE
    = 1: the lone French failure had a rare code (none of the named ones)."""
    k = 3
    sessions = [
        sess(0, 0, 1, DE, "fail", code="A"),
        sess(1, 1, 1, DE, "fail", code="B"),
        sess(2, 2, 1, DE, "fail", code="E"),
        sess(3, 3, 1, FR, "fail", code="C"),
        sess(4, 4, 1, FR),
        sess(5, 5, 1, FR),
    ]
    rows = run_full(sessions, k)[-1]
    day = ("day", T0 - T0 % 86_400, "news")
    total, de, fr = (
        rows[(*day, "", "")],
        rows[(*day, "country", "DE")],
        rows[(*day, "country", "FR")],
    )
    assert fr.failures == 0  # one failing viewer behind it: not shown (aggregator/release/sums.py)
    assert not fr.failures_by_code  # the rule, row by row: one holder
    recovered = total.failures_by_code.get("(other)", 0) - de.failures_by_code.get("(other)", 0)
    assert not 0 < recovered < k, (
        f"day (other) codes: total {total.failures_by_code} - DE {de.failures_by_code} = "
        f"{recovered} failure(s) with a rare code, all French, held by {recovered} viewer(s)"
    )


# ---- distinct viewers: a row's unique count against another row's ---------------------------


def test_unique_viewers_of_hour_minus_minute_isolate_one_new_viewer() -> None:
    """k = 5. Minute 1: DE viewers 0-4, FR viewers 5-9. Minute 2: DE viewers 0-3 and a new
    German viewer X, FR viewers 5-9 again. All rows have >= k viewers. But hour uniques -
    minute-1 uniques = 1 (one viewer of minute 2 is new), and per country DE: 1, FR: 0 -
    that one new viewer is German (and equally, viewer 4 left after minute 1)."""
    k = 5
    sessions = [
        *(sess(i, i, 1, DE) for i in range(5)),
        *(sess(5 + i, 5 + i, 1, FR) for i in range(5)),
        *(sess(10 + i, i, 2, DE) for i in range(4)),
        sess(14, 50, 2, DE),
        *(sess(15 + i, 5 + i, 2, FR) for i in range(5)),
    ]
    rows = run_full(sessions, k)[-1]
    new_total = rows[hour_key()].unique_viewers - rows[minute_key(1)].unique_viewers
    new_de = (
        rows[hour_key("country", "DE")].unique_viewers
        - rows[minute_key(1, "country", "DE")].unique_viewers
    )
    assert not 0 < new_total < k, (
        f"hour uniques {rows[hour_key()].unique_viewers} - minute-1 uniques "
        f"{rows[minute_key(1)].unique_viewers} = {new_total} viewer(s); of whom DE: {new_de}"
    )


def test_versions_of_an_open_hour_move_unique_viewers_by_one() -> None:
    """The same traffic read as versions: the open hour row's unique count after minute 1
    and after minute 2 differ by one viewer (each version step adds a published minute of
    >= k viewers, but the distinct count moves by how many of them are new)."""
    k = 5
    sessions = [
        *(sess(i, i, 1, DE) for i in range(5)),
        *(sess(5 + i, 5 + i, 1, FR) for i in range(5)),
        *(sess(10 + i, i, 2, DE) for i in range(4)),
        sess(14, 50, 2, DE),
        *(sess(15 + i, 5 + i, 2, FR) for i in range(5)),
    ]
    versions = [r[hour_key()].unique_viewers for r in run_full(sessions, k) if hour_key() in r]
    steps = [b - a for a, b in itertools.pairwise(versions) if b != a]
    assert all(d >= k for d in steps), f"hour unique_viewers versions {versions}: steps {steps}"


def test_unique_viewers_of_the_parts_minus_the_total_count_a_player_switcher() -> None:
    """k = 3. In one minute viewer 0 plays once on hls.js and once on shaka; the player
    values are published (hls.js: viewers 0-2, shaka: 0, 10, 11). The stream total's unique
    count is 5, the values' add up to 6: exactly one viewer used both players."""
    k = 3
    shaka = (*DE[:4], ("player", "shaka"))
    sessions = [
        *(sess(i, i, 1, DE) for i in range(3)),
        sess(3, 0, 1, shaka),
        *(sess(4 + i, 10 + i, 1, shaka) for i in range(2)),
    ]
    rows = run_full(sessions, k)[-1]
    total = rows[minute_key(1)].unique_viewers
    parts = sum(
        r.unique_viewers
        for key, r in rows.items()
        if key[:3] == minute_key(1)[:3] and key[3] == "player"
    )
    assert not 0 < parts - total < k, (
        f"player values' uniques {parts} - total uniques {total} = {parts - total} viewer(s) "
        "on both players"
    )


# ---- counts: attacks the rebuilt release withstands (kept as regressions) --------------------


def test_viewer_in_two_player_values_does_not_open_the_complement() -> None:
    """A viewer with two sessions in one minute, one per player (hls.js and shaka), makes the
    published values' viewer counts add up to more than the stream's distinct viewers. The
    attack: hope the complementary check (total - sum of shown sizes) lets a lone dash.js
    viewer be held back alone, so that total - shown values = that viewer's session."""
    k = 3
    shaka = (*DE[:4], ("player", "shaka"))
    dash = (*DE[:4], ("player", "dash.js"))
    sessions = [
        *(sess(i, i, 1, DE) for i in range(3)),
        sess(3, 0, 1, shaka),  # viewer 0 again, on shaka
        *(sess(4 + i, 10 + i, 1, shaka) for i in range(2)),
        sess(6, 20, 1, dash),  # the victim
        # the same in the hour's pool: streams held in two minutes, then released together
        *(sess(7 + i, 30 + i, 5 + i, DE, stream="sport") for i in range(3)),
    ]
    victim = sessions[6].atom
    releases = run_full(sessions, k)
    rows = releases[-1]
    for window in (minute_key(1), hour_key()):
        total = rows[window]
        shown = [
            r
            for key, r in rows.items()
            if key[:3] == window[:3] and key[3] == "player" and key[4] != ""
        ]
        left = (
            total.views - sum(r.views for r in shown),
            round((total.playing_seconds - sum(r.playing_seconds for r in shown)) * 1000),
        )
        assert left != (1, victim.playing_ms), f"{window}: total - players = the dash.js viewer"
    assert not Auditor([s.atom for s in sessions], k).audit(run(sessions, k))


def test_lone_minutes_of_two_streams_do_not_leak_through_the_pools_other() -> None:
    """A viewer alone on 'sport' in minute 2 and a viewer alone on 'music' in minute 3, with
    a crowd on 'news' in minutes 1 and 4: the hour's '(other)' stream (the pool's merge)
    minus the minutes' '(other)' rows must not be one viewer, nor may the day's."""
    k = 3
    sessions = [
        *(sess(i, i, 1, DE) for i in range(3)),
        sess(10, 40, 2, DE, stream="sport"),
        sess(11, 41, 3, DE, stream="music"),
        sess(12, 42, 62, DE, stream="sport"),  # the next hour: leftovers meet in the day
        *(sess(20 + i, 20 + i, 4, DE) for i in range(3)),
    ]
    releases = run(sessions, k)
    assert not Auditor([s.atom for s in sessions], k).audit(releases)


def test_a_session_crossing_into_a_lone_minute_is_not_given_back() -> None:
    """Real sessions cross minute boundaries (the auditor's atoms do not). k = 3: viewers
    0-2 play in minute 1 and end there; the victim starts in minute 1 too but keeps playing
    until 40 s into minute 2, where it is alone. Minute 2 is held back; the hour minus its
    minutes, and the day minus its hours, must not be the victim's minute-2 playing time."""
    k = 3
    victim = make_session(9, 9, "news", M0 + 1, DE, "play", code="x", **spans(9))
    start = victim.steps[1][0]  # its video start, in minute 1
    steps = (victim.steps[0], victim.steps[1], (100_000, "e", ()))  # ends in minute 2
    victim = Session(victim.atom, victim.sid, steps)
    minute2_ms = 100_000 - start  # playing is credited at the "e", in minute 2
    sessions = [*(sess(i, i, 1, DE) for i in range(3)), victim]
    rows = run_full(sessions, k)[-1]
    assert minute_key(2) not in rows
    minutes = sum(rows[minute_key(m)].playing_seconds for m in (1, 2) if minute_key(m) in rows)
    hour = rows[hour_key()].playing_seconds
    day = rows[("day", T0 - T0 % 86_400, "news", "", "")].playing_seconds
    for name, left in (("hour - minutes", hour - minutes), ("day - hour", day - hour)):
        assert round(left * 1000) != minute2_ms, f"{name}: the victim's minute 2 ({start=})"


def test_an_idle_ended_session_does_not_give_back_its_exit() -> None:
    """A viewer who starts with a crowd and never plays nor ends is ended by silence two
    minutes later: the exit before video start lands, alone, in a later minute. Neither the
    hour minus its minutes nor any version step may show that one exit."""
    k = 3
    lonely = make_session(9, 9, "news", M0 + 1, DE, "exit", code="x", **spans(9))
    lonely = Session(lonely.atom, lonely.sid, lonely.steps[:1])  # "s", then silence
    sessions = [
        *(sess(i, i, 1, DE) for i in range(3)),
        lonely,
        *(sess(20 + i, 20 + i, 10, DE) for i in range(3)),  # later traffic ticks the clock
    ]
    releases = run_full(sessions, k)
    rows = releases[-1]
    minutes = sum(
        r.exits_before_start for key, r in rows.items() if key[0] == "minute" and key[3] == ""
    )
    assert rows[hour_key()].exits_before_start - minutes != 1, "hour - minutes = the lone exit"
    versions = [r[hour_key()].exits_before_start for r in releases if hour_key() in r]
    assert all(not 0 < b - a < k for a, b in itertools.pairwise(versions)), versions


# ---- through the real service (HTTP CMCD reports in, /v1/export out) -------------------------


async def serve(svc: Audited, sessions: list[Session], k: int) -> list[dict[RowKey, Row]]:
    """Send ``sessions`` as CMCD reports to the running service (a new account, on a fresh
    day), flush after every minute like tests/privacy/test_service_audit.py, and return every
    export read back. The served sessions' countries are the service's (DE -> GB, FR -> NL)."""
    epoch = next(svc.epoch) + 1000  # days apart from the service audit's examples
    offset = 3 * epoch
    running = svc.running
    account = await running.create_account(name=f"redteam-{epoch}", k=k)
    who = _viewers(svc, sessions, epoch)
    served = _as_served(svc, sessions, offset, who)
    return await drive(svc, account, served, who, by_arrival=True)


async def test_service_export_total_minus_country_gives_back_a_lone_code_and_latency(
    audited: Audited,  # noqa: F811
) -> None:
    """The values attacks end to end: five German-served viewers fail with ``3016`` and send
    a latency; of five French-served ones, one fails with ``3016`` and sends a latency, the
    other four play and send none. From the export alone: total - GB row = one failure with
    ``3016`` and one latency sample, the lone NL viewer's, to the millisecond."""
    k = 5
    sessions = [
        *(sess(i, i, 1, DE, "fail", code="3016") for i in range(5)),
        sess(5, 5, 1, FR, "fail", code="3016"),
        *(sess(6 + i, 6 + i, 1, FR, latency=False) for i in range(4)),
    ]
    victim = sessions[5].atom
    rows = (await serve(audited, sessions, k))[-1]
    minute = next(key for key in rows if key[0] == "minute" and key[3] == "")
    total = rows[minute]
    gb = rows[(*minute[:3], "country", "GB")]
    nl = rows[(*minute[:3], "country", "NL")]
    assert nl.failures == 0  # one failing viewer behind it: not shown
    assert not nl.codes  # the rule, row by row
    assert nl.latency_count == 0
    recovered = (
        total.codes.get("3016", 0) - gb.codes.get("3016", 0),
        total.latency_count - gb.latency_count,
        total.latency_sum - gb.latency_sum,
    )
    assert recovered != (1, 1, victim.latency_ms), (
        f"from the export: the lone NL viewer failed with 3016 and had a latency of "
        f"{recovered[2]} ms (total {total.codes}, {total.latency_sum}/{total.latency_count}; "
        f"GB {gb.codes}, {gb.latency_sum}/{gb.latency_count})"
    )


@pytest.mark.parametrize(
    ("k", "others"),
    [pytest.param(2, 0, id="k2-one-person"), pytest.param(3, 1, id="k3-two-persons")],
)
async def test_a_session_crossing_midnight_makes_one_person_two_viewers(
    audited: Audited,  # noqa: F811
    k: int,
    others: int,
) -> None:
    """The viewer key is a keyed hash under the secret of the UTC day of arrival, but a
    session keeps the viewer of its first event. k = 3. Person P plays from 23:59:10 to
    00:00:40 (one session, old day's key) and starts a second session at 00:00:05 (the new
    day's key); person Q watches at 00:00:30. The new day's first minute holds three viewer
    keys, two persons: it is published, and it describes fewer than k people. With k = 2
    and no Q, the published minute is P alone."""
    last = M0 + 1439  # 23:59 of the first day
    p_night = Session(
        Atom(0, "news", last, DE),
        "s-night",
        (
            (10_000, "s", ()),
            (11_000, "p", (("msd", 1_000),)),
            (50_000, "p", ()),
            (80_000, "p", ()),  # 00:00:20: playing credited in the new day's minute
            (100_000, "e", ()),
        ),
    )
    p_morning = sess(1, 0, 1440, DE)  # the same person (viewer 0: same address and agent)
    q = [sess(2 + i, 1 + i, 1440, DE) for i in range(others)]
    releases = await serve(audited, [p_night, p_morning, *q], k)
    rows = releases[-1]
    total = next(  # the new day's first minute (the served traffic is moved by whole days)
        (
            r
            for key, r in rows.items()
            if key[0] == "minute" and key[1] % 86_400 == 0 and not key[3]
        ),
        None,
    )
    assert total is None, (
        f"the new day's first minute is published with unique_viewers="
        f"{total.unique_viewers}, views={total.views}, playing={total.playing_ms} ms: "
        f"{1 + others} person(s) (P counted under yesterday's and today's key), k = {k}"
    )


def test_one_heavy_sender_dominates_a_shown_latency_average() -> None:
    """Latency is shown where >= k viewers sent samples, but every event with ``ltc`` is a
    sample: a viewer whose player reports latency on each of 2000 events outweighs four
    viewers with one sample each. k = 5: the minute's latency is shown (5 senders), and its
    average is the heavy viewer's latency to within a few milliseconds."""
    k = 5
    heavy_ms = 60_000
    crowd = [sess(i, i, 1, DE) for i in range(4)]
    base = sess(9, 9, 1, DE, latency=False)
    steps = (
        base.steps[0],
        base.steps[1],
        *((2_000 + 20 * j, "p", (("ltc", heavy_ms),)) for j in range(2000)),
        (45_000, "e", ()),
    )
    heavy = Session(replace(base.atom, latency_ms=heavy_ms), base.sid, steps)
    rows = run_full([*crowd, heavy], k)[-1]
    total = rows[minute_key(1)]
    assert total.unique_viewers == k
    average = total.latency_ms_sum / total.latency_count
    assert abs(average - heavy_ms) > 0.01 * heavy_ms, (
        f"minute latency average {average:.1f} ms over {total.latency_count} samples of {k} "
        f"senders: the heavy viewer's {heavy_ms} ms"
    )


def test_marginals_of_a_lone_failure_pin_it_to_one_viewer() -> None:
    """Whole-cell counts (failures, exits, rebuffers) are shown in every row of >= k
    viewers, breakdown by breakdown. k = 3, one minute, one failure: the country, device
    and player rows that carry ``failures = 1`` are FR, mobile and shaka, and only one viewer
    of the minute is French, on mobile and on shaka. Whoever knows that viewer was watching
    (the doc's "knowledge from outside") learns that their playback failed."""
    k = 3

    people = [
        ("FR", "mobile", "shaka"),  # viewer 0, the victim: fails
        ("FR", "desktop", "hls.js"),
        ("FR", "desktop", "hls.js"),
        ("DE", "mobile", "hls.js"),
        ("DE", "mobile", "hls.js"),
        ("DE", "desktop", "shaka"),
        ("DE", "desktop", "shaka"),
        ("DE", "desktop", "hls.js"),
        ("FR", "desktop", "hls.js"),
    ]
    sessions = [
        sess(i, i, 1, dims(*p), "fail" if i == 0 else "play", code="3016")
        for i, p in enumerate(people)
    ]
    rows = run_full(sessions, k)[-1]
    total = rows[minute_key(1)]
    profile: dict[str, str] = {}
    for breakdown in ("country", "device", "player"):
        hits = [
            key[4]
            for key, r in rows.items()
            if key[:4] == (*minute_key(1)[:3], breakdown) and r.failures == total.failures
        ]
        if len(hits) == 1 and hits[0] != "(other)":
            profile[breakdown] = hits[0]
    matching = {
        s.atom.viewer for s in sessions if all(s.atom.dim(b) == v for b, v in profile.items())
    }
    assert len(matching) >= k, (
        f"the minute's one failure is {profile}: viewers matching it {sorted(matching)}"
    )


def test_one_long_watcher_dominates_a_shown_bitrate_average() -> None:
    """Bitrate is shown where >= k viewers played at a known bitrate, weighted by playing
    time: one viewer watching 55 s at 8000 kbps and four watching 0.05 s at 500 kbps give a
    shown average within 1 % of the long watcher's bitrate. k = 5."""
    k = 5
    dims = Dimensions(**dict(DE))
    base = (M0 + 1) * 60

    def ev(session: int, viewer: int, at: float, sta: str, br: int) -> Event:
        return Event(
            account_id=ACCOUNT,
            session=session,
            viewer=viewer,
            arrival=base + at,
            stream="news",
            kind="ps",
            dims=dims,
            ts_ms=int((base + at) * 1000),
            state=sta,
            bitrate_kbps=br,
        )

    events = [
        e
        for v in range(4)
        for e in (ev(100 + v, 100 + v, 1, "s", 500), ev(100 + v, 100 + v, 1.1, "p", 500))
    ]
    events += [ev(100 + v, 100 + v, 1.15, "e", 500) for v in range(4)]
    events += [ev(200, 200, 1, "s", 8000), ev(200, 200, 1.1, "p", 8000)]
    events += [ev(200, 200, 1.1 + 5 * j, "p", 8000) for j in range(1, 11)]
    events += [ev(200, 200, 56.1, "e", 8000)]
    rows = run_full([sess(0, 0, 1, DE)], k, events)[-1]  # plus one ordinary viewer
    total = rows[minute_key(1)]
    assert total.unique_viewers >= k  # six viewers, shown in steps of k
    assert total.bitrate_seconds > 0  # shown: >= k viewers played at a known bitrate
    average = total.bitrate_kbps_seconds / total.bitrate_seconds
    assert abs(average - 8000) > 80, (
        f"minute bitrate average {average:.0f} kbps over {total.bitrate_seconds:.1f} s of "
        f"{k} players: the long watcher's 8000 kbps"
    )


def test_a_row_of_k_viewers_whose_playing_time_is_one_viewers() -> None:
    """k counts the viewers present in a cell, not the ones behind each number in it. k = 5:
    four viewers open the player and leave before the video starts, one watches. The minute
    row is published (5 viewers, 5 views, 4 exits) and its playing and stall times are that
    one viewer's, to the millisecond."""
    k = 5
    sessions = [*(sess(i, i, 1, DE, "exit") for i in range(4)), sess(4, 4, 1, DE)]
    victim = sessions[4].atom
    rows = run_full(sessions, k)[-1]
    total = rows[minute_key(1)]
    assert total.unique_viewers == k
    recovered = (round(total.playing_seconds * 1000), round(total.rebuffer_seconds * 1000))
    assert recovered != (victim.playing_ms, victim.rebuffer_ms), (
        f"the published minute's playing/stall ms {recovered} are the one watcher's"
    )
