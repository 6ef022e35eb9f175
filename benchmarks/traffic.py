"""Realistic report traffic: many viewers, each playing a session the way real players report.

A session replays the event bodies of a captured playback (``tests/fixtures/cmcd``:
hls.js 1.7.4 and Shaka 5.2.12 in Chromium) with a fresh ``sid``, its own ``sn`` sequence
and ``ts`` shifted to a session start time, so every event is unique and counted once.
Every viewer has its own public client address (sent through ``X-Forwarded-For``, which the
server trusts from 127.0.0.1) and a browser user agent drawn from a few hundred realistic
variants; request headers are those a browser sends (about 700 bytes, as in the captures).

Requests interleave a fixed number of concurrently active sessions; when one ends, a new
viewer starts one. A report carries ``batch`` consecutive events of its session (fewer at
the session's end), as the player snippet's queue sends them (player-snippet/src/batch.js);
``batch=1`` is one event per report, as hls.js and Shaka send by themselves. All randomness
comes from one seeded ``random.Random``.
"""

from __future__ import annotations

import ipaddress
import json
import random
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "cmcd"

#: (fixture file, ?player= value) and how often each is played.
SCENARIOS: tuple[tuple[str, str, int], ...] = (
    ("hlsjs-main.jsonl", "hls.js", 6),
    ("shaka-main.jsonl", "shaka", 3),
    ("hlsjs-fatal-manifest404.jsonl", "hls.js", 1),
)

_SID = re.compile(r'sid="[^"]*"')
_SN = re.compile(r"(?<![A-Za-z0-9_.*-])sn=\d+")
_TS = re.compile(r"(?<![A-Za-z0-9_.*-])ts=(\d+)")
_EVENT = re.compile(r"(?:^|,)e=([a-z]+)")
# Placeholders: control characters never occur in a structured-field line.
_P_SID, _P_SN, _P_TS = "\x00sid\x01", "\x00sn\x01", "\x00ts\x01"
_P_CID = "\x00cid\x01"
_CID = re.compile(r'cid="[^"]*"')
#: Streams watched, most popular first (weights fall off like 1/rank).
STREAMS = tuple(f"bench-stream-{i:02d}" for i in range(1, 13))


@dataclass(frozen=True, slots=True)
class Template:
    """One captured playback: its event lines with ``ts`` made relative to the first event."""

    player: str
    lines: tuple[str, ...]  # with placeholders for sid, sn and ts; each ends in \n
    offsets_ms: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.lines)


@dataclass(frozen=True, slots=True)
class Viewer:
    ip: str
    user_agent: str
    language: str


@dataclass(frozen=True, slots=True)
class Request:
    """One report as a player sends it: one or more event lines, plain text."""

    viewer: Viewer
    player: str
    body: bytes
    session: int  # index of the session in this traffic
    stream: str  # cid
    events: int  # event lines in the body


def fixture_dir() -> Path:
    """Where the captures are: the repository's copy (tests/fixtures/cmcd)."""
    return FIXTURES


def load_template(path: Path, player: str) -> Template:
    """Event lines of one capture, as templates (every POST body line, in order)."""
    lines: list[str] = []
    stamps: list[int] = []
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        record = json.loads(raw)
        if record.get("method") != "POST":
            continue
        for line in str(record["body"]).splitlines():
            ts = _TS.search(line)
            if ts is None or not _EVENT.search(line):
                continue
            stamps.append(int(ts.group(1)))
            line = _SID.sub(f'sid="{_P_SID}"', line)
            line = _CID.sub(f'cid="{_P_CID}"', line)
            line = _SN.sub(f"sn={_P_SN}", line)
            line = _TS.sub(f"ts={_P_TS}", line)
            if _P_SN not in line:
                line += f",sn={_P_SN}"
            if _P_SID not in line:
                line += f',sid="{_P_SID}"'
            lines.append(line + "\n")
    if not lines:
        raise ValueError(f"{path} holds no CMCD event line")
    first = min(stamps)
    return Template(player, tuple(lines), tuple(s - first for s in stamps))


def load_templates(folder: Path | None = None) -> list[tuple[Template, int]]:
    """The scenarios with their weights."""
    folder = folder or fixture_dir()
    return [(load_template(folder / name, player), w) for name, player, w in SCENARIOS]


# -- viewers -------------------------------------------------------------------------------

_CHROME = (
    "Mozilla/5.0 ({os}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 {mobile}"
    "Safari/537.36"
)
_CHROME_OS = (
    ("Windows NT 10.0; Win64; x64", ""),
    ("Macintosh; Intel Mac OS X 10_15_7", ""),
    ("X11; Linux x86_64", ""),
    ("X11; CrOS x86_64 14541.0.0", ""),
    ("Linux; Android 10; K", "Mobile "),
    ("Linux; Android 14; SM-X710", ""),
)
_SAFARI = (
    "Mozilla/5.0 ({os}) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v}.{m} {mobile}"
    "Safari/604.1"
)
_SAFARI_OS = (
    ("iPhone; CPU iPhone OS {v}_{m} like Mac OS X", "Mobile/15E148 "),
    ("iPad; CPU OS {v}_{m} like Mac OS X", "Mobile/15E148 "),
    ("Macintosh; Intel Mac OS X 10_15_7", ""),
)
_FIREFOX = "Mozilla/5.0 ({os}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
_FIREFOX_OS = ("Windows NT 10.0; Win64; x64", "X11; Linux x86_64", "Macintosh; Intel Mac OS X 14.5")
_EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0"
)
_SAMSUNG = (
    "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/{v}.0 Chrome/115.0.0.0 Mobile Safari/537.36"
)
_TIZEN = (
    "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.5) AppleWebKit/537.36 (KHTML, like Gecko) "
    "{v}.0.4472.77/6.5 TV Safari/537.36"
)
_LANGUAGES = ("en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "es-ES,es;q=0.9")


def user_agents() -> list[str]:
    """A few hundred browser user agents, weighted roughly like web video traffic."""
    agents: list[str] = []
    for v in range(118, 132):
        for os_part, mobile in _CHROME_OS:
            agents += [_CHROME.format(os=os_part, v=v, mobile=mobile)] * 3
        agents.append(_EDGE.format(v=v))
    for v in range(15, 19):
        for m in range(0, 6):
            for os_part, mobile in _SAFARI_OS:
                agents += [_SAFARI.format(os=os_part.format(v=v, m=m), v=v, m=m, mobile=mobile)] * 2
    for v in range(115, 133):
        agents += [_FIREFOX.format(os=os_part, v=v) for os_part in _FIREFOX_OS]
    agents += [_SAMSUNG.format(v=v) for v in range(20, 27)]
    agents += [_TIZEN.format(v=v) for v in range(85, 95)]
    return agents


def public_ipv4(rng: random.Random) -> str:
    """A random globally routable IPv4 address."""
    while True:
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        if address.is_global and not address.is_multicast:
            return str(address)


def public_ipv6(rng: random.Random) -> str:
    """A random address in 2000::/3 (global unicast), as many ISPs hand out."""
    return str(ipaddress.IPv6Address((0x2 << 125) | rng.getrandbits(125)))


class ViewerFactory:
    """New viewers: a distinct client address each (one in five IPv6) and a browser."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.agents = user_agents()
        self.seen: set[str] = set()

    def new(self) -> Viewer:
        rng = self.rng
        while True:
            ip = public_ipv6(rng) if rng.random() < 0.2 else public_ipv4(rng)
            if ip not in self.seen:
                self.seen.add(ip)
                break
        return Viewer(ip, rng.choice(self.agents), rng.choice(_LANGUAGES))


# -- sessions ------------------------------------------------------------------------------


class _Session:
    __slots__ = ("index", "next", "sid", "start_ms", "stream", "template", "viewer")

    def __init__(
        self, index: int, template: Template, viewer: Viewer, sid: str, start_ms: int, stream: str
    ) -> None:
        self.index = index
        self.stream = stream
        self.template = template
        self.viewer = viewer
        self.sid = sid
        self.start_ms = start_ms
        self.next = 0

    def event(self) -> bytes:
        i = self.next
        self.next = i + 1
        line = (
            self.template.lines[i]
            .replace(_P_SID, self.sid)
            .replace(_P_CID, self.stream)
            .replace(_P_SN, str(i))
            .replace(_P_TS, str(self.start_ms + self.template.offsets_ms[i]))
        )
        return line.encode()

    @property
    def done(self) -> bool:
        return self.next >= len(self.template)


class Traffic:
    """An endless stream of reports from ``concurrent`` interleaved sessions."""

    def __init__(
        self,
        templates: Sequence[tuple[Template, int]],
        *,
        concurrent: int,
        seed: int,
        start_ms: int,
        max_events_per_session: int | None = None,
        sessions: int | None = None,
        streams: Sequence[str] | None = None,
        batch: int = 1,
    ) -> None:
        if batch < 1:
            raise ValueError("batch: at least one event per report")
        self.batch = batch
        self.rng = random.Random(seed)
        self.viewers = ViewerFactory(self.rng)
        self.templates = [t for t, _ in templates]
        self.weights = [w for _, w in templates]
        self.start_ms = start_ms
        self.max_events = max_events_per_session
        self.streams = tuple(streams) if streams else STREAMS
        # Popularity falls off like 1/rank; a given list of streams is used in turn instead.
        self.stream_weights = [1.0 / rank for rank in range(1, len(self.streams) + 1)]
        self.in_turn = streams is not None
        self.sessions_started = 0
        self.limit = sessions
        if sessions is not None:
            concurrent = min(concurrent, sessions)
        self.active: list[_Session] = [self._new_session() for _ in range(concurrent)]
        self.cursor = 0

    def _new_session(self) -> _Session:
        template = self.rng.choices(self.templates, self.weights)[0]
        if self.max_events is not None and self.max_events < len(template):
            template = Template(
                template.player,
                template.lines[: self.max_events],
                template.offsets_ms[: self.max_events],
            )
        sid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        start = self.start_ms + self.rng.randrange(0, 600_000)
        if self.in_turn:
            stream = self.streams[self.sessions_started % len(self.streams)]
        else:
            stream = self.rng.choices(self.streams, self.stream_weights)[0]
        session = _Session(self.sessions_started, template, self.viewers.new(), sid, start, stream)
        self.sessions_started += 1
        return session

    def __iter__(self) -> Iterator[Request]:
        return self

    def __next__(self) -> Request:
        """The next report: round-robin over the active sessions (with some jitter)."""
        active = self.active
        if not active:
            raise StopIteration
        i = self.cursor % len(active)
        self.cursor = i + 1 + (self.rng.random() < 0.1)
        session = active[i]
        body = session.event()
        events = 1
        while events < self.batch and not session.done:
            body += session.event()
            events += 1
        request = Request(
            session.viewer, session.template.player, body, session.index, session.stream, events
        )
        if session.done:
            if self.limit is None or self.sessions_started < self.limit:
                active[i] = self._new_session()
            else:
                del active[i]
        return request

    def take(self, n: int) -> list[Request]:
        """The next ``n`` reports (fewer if the sessions are limited and run out)."""
        return [r for r, _ in zip(self, range(n), strict=False)]


def views_in(lines: Sequence[str]) -> int:
    """Views in one session's events (in order), by the rule the aggregator documents
    (aggregator/counting/sessions.py): a view starts when a session not in a view reaches ``sta``
    ``s``, ``p``, ``r`` or ``f``; ``p`` or ``s`` after an end (``e``, ``f``, ``q``) starts
    another. A session that sends no ``sta`` at all starts its view with its first ``rr``
    or ``bc`` event or ``msd`` key."""
    states = [re.search(r"(?:^|,)sta=([a-z])", line) for line in lines]
    if not any(states):
        starts = any(_EVENT_KIND.search(line) or re.search(r"(?:^|,)msd=", line) for line in lines)
        return int(starts)
    views = 0
    in_view = ended = False
    for match in states:
        if match is None:
            continue
        sta = match.group(1)
        if (not in_view and sta in "sprf") or (ended and sta in "ps"):
            views += 1
            in_view, ended = True, False
        if sta in "efq":
            ended = True
    return views


_EVENT_KIND = re.compile(r"(?:^|,)e=(?:rr|bc)(?:,|$)")


def complete_sessions(
    templates: Sequence[tuple[Template, int]],
    count: int,
    *,
    seed: int,
    start_ms: int,
    streams: Sequence[str] = STREAMS[:2],
    batch: int = 1,
) -> tuple[list[Request], int]:
    """``count`` whole sessions, interleaved, and the number of views they hold. Sessions
    take ``streams`` in turn, so that each stream has about count/len(streams) viewers: a
    stream with fewer than k would be folded into ``(other)`` or suppressed, by design."""
    traffic = Traffic(
        templates,
        concurrent=min(count, 50),
        seed=seed,
        start_ms=start_ms,
        sessions=count,
        streams=streams,
        batch=batch,
    )
    requests = list(traffic)
    by_session: dict[int, list[str]] = {}
    for r in requests:
        by_session.setdefault(r.session, []).extend(r.body.decode().splitlines())
    return requests, sum(views_in(lines) for lines in by_session.values())


def session_starts(
    count: int,
    templates: Sequence[tuple[Template, int]],
    *,
    seed: int,
    start_ms: int,
    events_per_session: int,
) -> list[Request]:
    """``count`` new sessions, each sending its first ``events_per_session`` events, one
    session after the other: what the memory measurement keeps active."""
    traffic = Traffic(
        templates,
        concurrent=1,
        seed=seed,
        start_ms=start_ms,
        max_events_per_session=events_per_session,
    )
    return traffic.take(count * events_per_session)
