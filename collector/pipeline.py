"""The report pipeline: small named steps, each timed and counted; a stop is a value.

    receive → admit → open → parse → limit → dedupe → strip → key → handover

Cheap refusals (type, size, account, origin, bot, address rate) run before the expensive
HPKE open. Two rate limits answer 429: a high one per client address in ``admit`` (it
guards the HPKE open; viewers behind one NAT share it), and one per playback session in
``limit`` (the session is in the report, so it is known only once the report is open and
parsed; reports without a sid are limited per IP and user agent instead). Both key their
buckets by keyed hashes (``ViewerKeys``), never by an address or a session id.
A step returns None to go on, or a :class:`Stop`: either a :class:`Reject` (answered with a
problem document and counted in ``streamtally_reports_rejected_total{reason}``) or a
:class:`Drop` (answered 204, counted in ``streamtally_events_dropped_total{reason}``: the
client did nothing wrong, we just don't count it, e.g. a bot).

The :class:`Report` holds the request's identifying data (IP, user agent, sid) only while
the pipeline runs; after ``strip`` and ``key`` nothing of it is referenced by what goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Final

from collector import cmcd, sealed
from collector.accounts import Account, AccountDirectory
from collector.clientip import ClientIP
from collector.dedupe import Deduper
from collector.errors import (
    BadRequest,
    Forbidden,
    Gone,
    HTTPProblem,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    Replayed,
    UnsupportedMediaType,
)
from collector.handover import UNKNOWN, Dimensions, Event, Sink
from collector.keys import KeyStore
from collector.metrics import (
    EVENTS_ACCEPTED,
    EVENTS_DROPPED,
    REPORTS_ACCEPTED,
    REPORTS_REJECTED,
    STEP_TIMES,
)
from collector.ratelimit import RateLimiter
from collector.replay import ReplayGuard
from collector.strip import Stripper, player_from_query, screen_events
from collector.useragent import classify_ua
from collector.viewer import ViewerKeys

PLAIN_TYPE = "application/cmcd"
SEALED_TYPE = sealed.CONTENT_TYPE
MAX_REPORTED_ERRORS = 20


@dataclass(frozen=True, slots=True)
class Reject:
    problem: HTTPProblem


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str  # bot_ua, empty_ua, ...: small fixed set


Stop = Reject | Drop


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the handler answers: 204, or a problem (with its status and headers)."""

    accepted: int
    problem: HTTPProblem | None = None


# The usual outcomes, made once: a report of up to a snippet batch's 30 events, all good.
_CLEAN: Final = tuple(Outcome(n) for n in range(31))
_NOTHING: Final = _CLEAN[0]


@dataclass(slots=True)
class Report:
    """One request while it is in the pipeline. Raw identifiers live only here."""

    embed_key: str
    content_type: str
    body: bytes
    ip: str
    user_agent: str
    origin: str | None
    player: str | None
    arrival: float
    account: Account | None = None
    sealed: bool = False
    plaintext: str = ""
    parsed: cmcd.Parsed | None = None
    fresh: list[cmcd.CmcdEvent] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)
    handles: list[int] = field(default_factory=list)  # each event's session handle
    dims: Dimensions | None = None
    viewer: int | None = None


class Pipeline:
    def __init__(
        self,
        *,
        accounts: AccountDirectory,
        keys: KeyStore,
        sink: Sink,
        stripper: Stripper,
        client_ip: ClientIP,
        viewers: ViewerKeys,
        replay: ReplayGuard,
        limiter: RateLimiter,
        deduper: Deduper,
        address_limiter: RateLimiter | None = None,
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts
        self.keys = keys
        self.sink = sink
        self.stripper = stripper
        self.client_ip = client_ip
        self.viewers = viewers
        self.replay = replay
        self.limiter = limiter
        self.address_limiter = address_limiter
        self.deduper = deduper
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        # The steps as bound methods, made once (not per report), in STEPS's order.
        self._steps = (
            self.receive,
            self.admit,
            self.open,
            self.parse,
            self.limit,
            self.dedupe,
            self.strip,
            self.key,
            self.handover,
        )

    # -- entry -----------------------------------------------------------------------------

    def run(self, report: Report) -> Outcome:
        # Each step's time and count go straight into STEP_TIMES's lists (in STEPS's order):
        # a call per step to time it cost more than some steps take.
        counts = STEP_TIMES.counts
        totals = STEP_TIMES.totals
        clock = perf_counter
        t = clock()
        for i, step in enumerate(self._steps):
            stop = step(report)
            now = clock()
            totals[i] += now - t
            counts[i] += 1
            if stop is not None:
                return self._stopped(report, stop)
            t = now
        REPORTS_ACCEPTED.inc()
        return self._answer(report)

    def _stopped(self, report: Report, stop: Stop) -> Outcome:
        if isinstance(stop, Reject):
            REPORTS_REJECTED.labels(stop.problem.reason).inc()
            return Outcome(0, stop.problem)
        lines = len(report.parsed.events) if report.parsed else 1
        EVENTS_DROPPED.labels(stop.reason).inc(lines)
        REPORTS_ACCEPTED.inc()
        return _NOTHING

    def _answer(self, report: Report) -> Outcome:
        parsed = report.parsed
        assert parsed is not None
        accepted = len(parsed.events)
        if not parsed.errors:
            return _CLEAN[accepted] if accepted < len(_CLEAN) else Outcome(accepted)
        errors = [
            {"line": e.line, "key": e.key, "detail": e.detail}
            for e in parsed.errors[:MAX_REPORTED_ERRORS]
        ]
        first = parsed.errors[0]
        where = f"line {first.line}" + (f", key {first.key!r}" if first.key else "")
        problem = BadRequest(
            f"{len(parsed.errors)} malformed line(s), first at {where}: {first.detail}; "
            f"{accepted} good line(s) were accepted",
            errors=errors,
            accepted=accepted,
        )
        REPORTS_REJECTED.labels(problem.reason).inc()
        return Outcome(accepted, problem)

    # -- steps -----------------------------------------------------------------------------

    def receive(self, r: Report) -> Stop | None:
        if not self.sink.accepting():
            return Reject(Overloaded("reports cannot be stored safely right now; retry later"))
        ctype = r.content_type.split(";", 1)[0].strip().lower()
        if ctype == SEALED_TYPE:
            r.sealed = True
        elif ctype != PLAIN_TYPE:
            return Reject(
                UnsupportedMediaType(
                    f"Content-Type must be {PLAIN_TYPE} or {SEALED_TYPE}",
                    key="Content-Type",
                )
            )
        if len(r.body) > self.max_body_bytes:
            return Reject(
                PayloadTooLarge(f"report body over the limit of {self.max_body_bytes} bytes")
            )
        if not r.body:
            return Reject(BadRequest("empty report body", key="body"))
        return None

    def admit(self, r: Report) -> Stop | None:
        account = self.accounts.by_embed_key(r.embed_key)
        if account is None:
            return Reject(NotFound("unknown embed key", key="embed_key"))
        if account.deleted:
            return Reject(Gone("this account was deleted: stop sending reports"))
        if not account.allows_origin(r.origin):
            return Reject(
                Forbidden("the page's Origin is not among the account's origins", key="Origin")
            )
        r.account = account
        if not self.sink.accepting_for(account.account_id):
            return Reject(
                Overloaded(
                    "this account's events cannot be taken right now; retry later", retry_after=2
                )
            )
        ua = classify_ua(r.user_agent)
        if ua.bot is not None:
            return Drop(ua.bot)
        if self.address_limiter is not None:
            wait = self.address_limiter.check(self.viewers.address_handle(r.ip))
            if wait > 0:
                retry = max(1, int(wait + 0.999))
                return Reject(
                    RateLimited(
                        f"too many reports from this address; retry in {retry} s",
                        retry,
                        limit="address",
                    )
                )
        return None

    def open(self, r: Report) -> Stop | None:
        if not r.sealed:
            try:
                r.plaintext = r.body.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Reject(BadRequest(f"body is not UTF-8 (byte {exc.start})", key="body"))
            return None
        try:
            opened = sealed.open_sealed(r.body, self.keys)
        except HTTPProblem as problem:
            return Reject(problem)
        if self.replay.seen(opened.enc):
            return Reject(
                Replayed("this sealed body was received before; seal every report anew", key="enc")
            )
        try:
            r.plaintext = opened.plaintext.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Reject(BadRequest(f"sealed payload is not UTF-8 (byte {exc.start})", key="body"))
        return None

    def parse(self, r: Report) -> Stop | None:
        parsed = cmcd.parse(r.plaintext)
        r.plaintext = ""
        r.parsed = parsed
        if not parsed.events:
            if parsed.errors:
                first = parsed.errors[0]
                where = f"line {first.line}" + (f", key {first.key!r}" if first.key else "")
                errors = [
                    {"line": e.line, "key": e.key, "detail": e.detail}
                    for e in parsed.errors[:MAX_REPORTED_ERRORS]
                ]
                return Reject(
                    BadRequest(
                        f"no valid event; {where}: {first.detail}", errors=errors, accepted=0
                    )
                )
            return Reject(BadRequest("report holds no event line", key="body"))
        return None

    def limit(self, r: Report) -> Stop | None:
        """The per-session rate limit: one token per session the report speaks for (before
        dedupe, so that a refused report's events count when the player sends them again)."""
        assert r.parsed is not None
        assert r.account is not None
        account_id = r.account.account_id
        handle = self.viewers.session_handle
        handles = r.handles
        buckets: set[int] = set()
        client: int | None = None
        for ev in r.parsed.events:
            if ev.sid is not None:
                handles.append(handle(account_id, ev.sid))
                buckets.add(handles[-1])
                continue
            # Without a sid, the (client, stream) pair stands in for the session: the client
            # is (IP, user agent) as a keyed hash, and it is what the rate limit holds to.
            if client is None:
                client = self.viewers.client_handle(r.ip, r.user_agent)
            handles.append(handle(account_id, f"\x00{client:x}\x00{ev.cid}"))
            buckets.add(client)
        check = self.limiter.check
        wait = 0.0
        for bucket in buckets:  # every bucket takes its token, as each limits on its own
            bucket_wait = check(bucket)
            if bucket_wait > wait:
                wait = bucket_wait
        if wait > 0:
            retry = max(1, int(wait + 0.999))
            return Reject(
                RateLimited(
                    f"too many reports for this session; retry in {retry} s", retry, limit="session"
                )
            )
        return None

    def dedupe(self, r: Report) -> Stop | None:
        assert r.parsed is not None
        first_time = self.deduper.first_time
        fresh = r.fresh
        sessions = r.sessions
        duplicates = 0
        for ev, session in zip(r.parsed.events, r.handles, strict=True):
            if first_time(session, ev.sn, ev.ts, ev.e):
                fresh.append(ev)
                sessions.append(session)
            else:
                duplicates += 1
        if duplicates:
            EVENTS_DROPPED.labels("duplicate").inc(duplicates)
        return None

    def strip(self, r: Report) -> Stop | None:
        assert r.account is not None
        player = player_from_query(r.player)
        r.dims = self.stripper.dimensions(r.ip, r.user_agent, player)
        r.player = None
        screen_events(r.fresh, r.account, player)
        return None

    def key(self, r: Report) -> Stop | None:
        assert r.account is not None
        r.viewer = self.viewers.key(r.account.account_id, r.ip, r.user_agent, r.arrival)
        # From here on nothing reads the raw identifiers again.
        r.ip = r.user_agent = ""
        r.origin = None
        if r.viewer is None:
            return Drop("late")
        return None

    def handover(self, r: Report) -> Stop | None:
        assert r.account is not None
        assert r.dims is not None
        assert r.viewer is not None
        account_id = r.account.account_id
        dims = r.dims
        viewer = r.viewer
        arrival = r.arrival
        # Positional, in Event's field order (keywords cost twice as much to pass):
        # account_id, session, viewer, arrival, stream (cid screened in strip), kind, dims,
        # ts_ms, seq, state, bitrate_kbps, buffer_ms, startup_ms, latency_ms, playhead_ms,
        # rate, error_code, response_code, ttfb_ms, cdn_host.
        events = [
            Event(
                account_id,
                session,
                viewer,
                arrival,
                ev.cid or UNKNOWN,
                ev.e,
                dims,
                ev.ts,
                ev.sn,
                ev.sta,
                ev.br,
                ev.bl,
                ev.msd,
                ev.ltc,
                ev.pt,
                ev.pr,
                ev.ec,
                ev.rc,
                ev.ttfb,
                None,
            )
            for ev, session in zip(r.fresh, r.sessions, strict=True)
        ]
        if events:
            self.sink.submit(events)
            EVENTS_ACCEPTED.inc(len(events))
        return None
