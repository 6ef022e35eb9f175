"""Red-team attacks, second round: the sums rule (aggregator/release/sums.py), the values
rule (values.py) and rounded unique counts (cells.py) against differences *across windows*.

Same method as tests/privacy/test_redteam.py (whose ``run_full`` and ``sess`` are reused):
hand-made traffic through the real counting and release code, then only what was
released is read, a number is derived from it the way a reader of the export would, and
the test asserts that this number is NOT fewer than k viewers' private data. A failing
test is an attack that succeeded.
"""

from __future__ import annotations

from tests.privacy.test_redteam import FullKey, run_full, sess
from tests.privacy.traffic import DE, FR, M0, T0, make_session, spans

DAY = 86_400


def hour_key(breakdown: str = "", value: str = "") -> FullKey:
    return ("hour", T0, "news", breakdown, value)


def day_key(breakdown: str = "", value: str = "") -> FullKey:
    return ("day", T0, "news", breakdown, value)


def test_pooled_sums_of_a_breakdown_and_its_total_part_ways() -> None:
    """k = 5. Minute 1: five German viewers play; of five French viewers only V plays. The
    total shows the 6 players' time; DE's and FR's are held back (complementary) and pooled.
    Minute 2: five new French viewers, four play: the total's and FR's playing time (4
    holders) are both pooled. In the hour's pool DE has 5 holders, FR has V + 4 = 5: both
    released, the total's 4 not. So hour total - hour DE = V's playing time, to the ms."""
    k = 5
    sessions = [
        *(sess(i, i, 1, DE) for i in range(5)),
        sess(5, 5, 1, FR),  # V
        *(sess(6 + i, 6 + i, 1, FR, "exit") for i in range(4)),
        *(sess(10 + i, 10 + i, 2, FR) for i in range(4)),
        sess(14, 14, 2, FR, "exit"),
    ]
    v_playing = 2 * spans(5)["b"]
    rows = run_full(sessions, k)[-1]
    for granularity, key in (("hour", hour_key), ("day", day_key)):
        total, de = rows[key()], rows.get(key("country", "DE"))
        de_playing = round(de.playing_seconds * 1000) if de else 0
        recovered = round(total.playing_seconds * 1000) - de_playing
        assert recovered != v_playing, (
            f"{granularity}: total {total.playing_seconds} s - DE {de_playing} ms "
            f"= {recovered} ms: the one French player V's playing time"
        )


def test_pooled_failures_pin_a_lone_failure_to_its_country() -> None:
    """The same parting of ways for failures, the case sums.py names: k = 5. Minute 1: five
    German viewers fail, of five French viewers only V fails; the total shows 6 failures,
    DE and FR are held back (complementary) and pooled. Minute 2: four new French viewers
    fail among five (the total's and FR's 4 failures are pooled). The hour's pool releases
    DE (5) and FR (V + 4), not the total's 4: hour total - hour DE = 1, V's failure."""
    k = 5
    sessions = [
        *(sess(i, i, 1, DE, "fail") for i in range(5)),
        sess(5, 5, 1, FR, "fail"),  # V
        *(sess(6 + i, 6 + i, 1, FR) for i in range(4)),
        *(sess(10 + i, 10 + i, 2, FR, "fail") for i in range(4)),
        sess(14, 14, 2, FR),
    ]
    rows = run_full(sessions, k)[-1]
    for granularity, key in (("hour", hour_key), ("day", day_key)):
        total, de = rows[key()], rows.get(key("country", "DE"))
        recovered = total.failures - (de.failures if de else 0)
        assert recovered != 1, (
            f"{granularity}: total {total.failures} failures - DE "
            f"{de.failures if de else 0} = 1: the one French viewer V failed"
        )


def test_one_long_stall_dominates_a_shown_rebuffering_sum() -> None:
    """The sums rule counts the viewers behind a sum, not how much each gave (no dominance
    rule, unlike latency and bitrate averages). k = 5, minute 1: four viewers stall for a
    tenth of a second each, V stalls for 50 s. The rebuffering time has 5 holders and is
    shown: 50.4 s, of which V's is 99%; any reader learns that one viewer of the minute
    stalled for about 50 s (and it is V's to 1%)."""
    k = 5
    short = [
        make_session(i, i, "news", M0 + 1, DE, "play", 500, 1_000, 100, 900, "x") for i in range(4)
    ]
    v_stall = 50_000
    sessions = [
        *short,
        make_session(4, 4, "news", M0 + 1, DE, "play", 500, 1_000, v_stall, 900, "x"),
    ]
    rows = run_full(sessions, k)[-1]
    total = rows[("minute", T0 + 60, "news", "", "")]
    shown_ms = round(total.rebuffer_seconds * 1000)
    assert not (shown_ms > 0 and abs(shown_ms - v_stall) <= v_stall // 100), (
        f"the minute's rebuffering ({shown_ms} ms, {total.rebuffer_count} stalls from "
        f"{k} viewers) is V's {v_stall} ms stall to within 1%"
    )
