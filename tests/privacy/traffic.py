"""Traffic for the auditor: sessions that each live inside one minute, as CMCD events.

Each session is an :class:`~tests.privacy.auditor.Atom` (what it contributes) plus the
events that make it (what a player sends). Playing and rebuffering times are drawn to the
millisecond so that sums of sessions are recognisable (see the auditor).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.privacy.auditor import Atom

COUNTRIES = ("DE", "FR", "US")
DEVICES = ("desktop", "mobile")
PLAYERS = ("hls.js", "shaka")
STREAMS = ("news", "sport")
CODES = ("manifestLoadError", "fragLoadError", "3016")
T0 = 1_795_478_400  # 2026-11-24 00:00:00 UTC
# minutes after T0: two hours and the first minutes of the next day
M0 = T0 // 60  # the unix minute of T0


def dims(
    country: str = "DE", device: str = "desktop", player: str = "hls.js"
) -> tuple[tuple[str, str], ...]:
    """A session's dimensions (Linux, Chrome) for the scripted attacks."""
    return (
        ("country", country),
        ("device", device),
        ("os", "Linux"),
        ("browser", "Chrome"),
        ("player", player),
    )


DE = dims("DE")
FR = dims("FR")
MINUTES = (0, 1, 2, 3, 30, 59, 60, 61, 62, 90, 119, 1440, 1441)


@dataclass(frozen=True)
class Session:
    atom: Atom
    sid: str
    # (ms after the minute's start, CMCD state, extra keys) in sending order
    steps: tuple[tuple[int, str, tuple[tuple[str, str | int], ...]], ...]


def make_session(
    n: int,
    viewer: int,
    stream: str,
    minute: int,
    dims: tuple[tuple[str, str], ...],
    kind: str,
    a: int,
    b: int,
    c: int,
    latency: int,
    code: str,
) -> Session:
    """Session ``n`` in ``minute`` (unix minute): ``kind`` play (s, p, r, p, e), fail
    (s, p, f with a code) or exit (s then e, never playing). ``a``, ``b``, ``c`` are ms
    spans (startup, playing, stall)."""
    t0 = 1_000
    ltc = (("ltc", latency),)
    if kind == "exit":
        steps = ((t0, "s", ltc), (t0 + a, "e", ()))
        atom = Atom(viewer, stream, minute, dims, exits=1, latency_ms=latency)
    elif kind == "fail":
        steps = (
            (t0, "s", ltc),
            (t0 + a, "p", (("msd", a),)),
            (t0 + a + b, "f", (("ec", code),)),
        )
        atom = Atom(
            viewer,
            stream,
            minute,
            dims,
            playing_ms=b,
            failures=1,
            code=code,
            latency_ms=latency,
            startup=True,
        )
    else:
        steps = (
            (t0, "s", ltc),
            (t0 + a, "p", (("msd", a),)),
            (t0 + a + b, "r", ()),
            (t0 + a + b + c, "p", ()),
            (t0 + a + 2 * b + c, "e", ()),
        )
        atom = Atom(
            viewer,
            stream,
            minute,
            dims,
            playing_ms=2 * b,
            rebuffer_count=1,
            rebuffer_ms=c,
            latency_ms=latency,
            startup=True,
        )
    return Session(atom, f"s{n:04d}", steps)


def spans(n: int) -> dict[str, int]:
    """Session ``n``'s startup, playing, stall and latency in ms: pseudo-random but fixed by
    ``n`` (not drawn), so that shrinking cannot make sessions alike and sums stay telling."""
    rng = random.Random(n * 7919 + 17)
    return {
        "a": rng.randint(200, 4_000),
        "b": rng.randint(1_000, 17_000),
        "c": rng.randint(100, 9_000),
        "latency": rng.randint(500, 30_000),
    }


@st.composite
def traffic(draw: st.DrawFn, max_viewers: int = 14) -> list[Session]:
    """Viewers with a fixed country and device (they come from IP and user agent), each
    with a few sessions in a few of ``MINUTES``. Every session plays (and rebuffers or
    fails), so that every session's counts are telling: an exit before video start
    carries no duration and one is indistinguishable from another (those are attacked in
    tests/privacy/test_findings.py with hand-made traffic instead)."""
    n_viewers = draw(st.integers(1, max_viewers))
    sessions: list[Session] = []
    for viewer in range(n_viewers):
        country = draw(st.sampled_from(COUNTRIES))
        device = draw(st.sampled_from(DEVICES))
        minutes = draw(st.lists(st.sampled_from(MINUTES), min_size=1, max_size=3, unique=True))
        for minute in minutes:
            kind = draw(st.sampled_from(("play", "play", "play", "fail")))
            player = draw(st.sampled_from(PLAYERS))
            dims = (
                ("country", country),
                ("device", device),
                ("os", "Linux"),
                ("browser", "Chrome"),
                ("player", player),
            )
            sessions.append(
                make_session(
                    len(sessions),
                    viewer,
                    draw(st.sampled_from(STREAMS)),
                    T0 // 60 + minute,
                    dims,
                    kind,
                    **spans(len(sessions)),
                    code=draw(st.sampled_from(CODES)),
                )
            )
    return sessions
