"""The lean path: ``POST /v1/r/{embed_key}`` answered without aiohttp's general request path.

A connection starts with :class:`LeanProtocol`. As long as its requests are what a player
sends (``POST /v1/r/KEY[?player=...] HTTP/1.1``, its CORS preflight ``OPTIONS /v1/r/KEY``
and ``GET /v1/keys``; ASCII head, one ``Content-Length`` within ``max_body_bytes``, no
``Transfer-Encoding``, ``Expect``, ``Upgrade`` or ``Connection`` other than keep-alive), it
parses them itself, answers them with the same functions of ``collector/app.py`` as the
aiohttp handlers (the report through the same :class:`Pipeline`) and writes the same bytes
aiohttp would. The first request that is anything else, the whole connection is handed to aiohttp's
own ``RequestHandler`` with every byte not yet answered, and stays there: routes, CORS
preflights, odd framing, oversized bodies, the access log (``--log-level debug``) and
draining before a hot restart are aiohttp's, unchanged.

Why: a report is ~700 bytes of browser headers and a one-line body; aiohttp spends more CPU
on the request object, router, middleware, signals and response object than the whole
pipeline does (docs/performance.md). The lean path keeps only what a report needs.

:class:`LeanAppRunner` is ``web.AppRunner`` with this protocol in front (for an app that has
the collector's routes); its server lists lean connections next to aiohttp's, so shutdown,
draining and ``requests_count`` see them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_keepalive

from collector.accounts import Account
from collector.app import (
    COLLECTOR_CONFIG,
    KEYS_TYPE,
    KEYSTORE,
    PIPELINE,
    answer_cors,
    cors_headers,
    keys_headers,
    late_problem,
    log_unexpected,
    preflight_answer,
)
from collector.errors import HTTPProblem
from collector.metrics import REPORTS_REJECTED
from collector.pipeline import Pipeline, Report

__all__ = ["LeanAppRunner", "LeanProtocol", "LeanServer"]

MAX_HEAD_BYTES = 8190  # aiohttp's max_line_size/max_field_size: longer heads go to aiohttp
KEEPALIVE_SECONDS = 75.0  # aiohttp's keepalive_timeout
_POST = b"POST /v1/r/"
_OPTIONS = b"OPTIONS /v1/r/"
_KEYS = b"GET /v1/keys HTTP/1.1"
_SUFFIX = b" HTTP/1.1"
REPORT, PREFLIGHT, KEYS = 0, 1, 2
_KEY = re.compile(rb"[A-Za-z0-9._~-]+")
_QUERY = re.compile(
    rb"(?:[A-Za-z0-9._~-]+=[A-Za-z0-9._~-]*)(?:&[A-Za-z0-9._~-]+=[A-Za-z0-9._~-]*)*"
)
_LINE_BYTES = bytes(range(0x20, 0x7F)) + b"\t"
_NOT_A_HEADER = re.compile(rb"\r\n(?![!#$%&'*+.^_`|~0-9A-Za-z-]+:)")
_CONTENT_LENGTH, _CONNECTION, _FRAMING = "content_length", "connection", "framing"
# The headers the lean path reads; a request with one of the framing ones goes to aiohttp.
_FIELDS = {
    b"content-length": _CONTENT_LENGTH,
    b"content-type": "content_type",
    b"user-agent": "ua",
    b"origin": "origin",
    b"x-forwarded-for": "xff",
    b"connection": _CONNECTION,
    b"transfer-encoding": _FRAMING,
    b"expect": _FRAMING,
    b"upgrade": _FRAMING,
}
_WANTED = re.compile(
    rb"\r\n(" + b"|".join(re.escape(name) for name in _FIELDS) + rb"):[ \t]*([^\r]*)",
    re.IGNORECASE,
)
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n"
_access = logging.getLogger("aiohttp.access")
_NO_CONTENT_ORIGINS = 1024


class _Head:
    __slots__ = (
        "content_length",
        "content_type",
        "embed_key",
        "kind",
        "origin",
        "player",
        "ua",
        "xff",
    )

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.content_length = -1
        self.content_type: str | None = None
        self.embed_key = ""
        self.origin: str | None = None
        self.player: str | None = None
        self.ua: str | None = None
        self.xff: str | None = None


def parse_head(head: bytes) -> _Head | None:
    """The head (without its final CRLF CRLF) of a report post, its CORS preflight or
    GET /v1/keys; None: a request for aiohttp (it answers or refuses what is odd)."""
    # Printable ASCII and tabs in CRLF-ended lines only (no bare CR or LF, no byte >= 0x80).
    if head.replace(b"\r\n", b"").translate(None, _LINE_BYTES):
        return None
    first = head.find(b"\r\n")
    if first < 0:
        first = len(head)
    line = head[:first]
    query = b""
    if line == _KEYS:
        out = _Head(KEYS)
    else:
        if line.startswith(_POST):
            out, start = _Head(REPORT), len(_POST)
        elif line.startswith(_OPTIONS):
            out, start = _Head(PREFLIGHT), len(_OPTIONS)
        else:
            return None
        if not line.endswith(_SUFFIX):
            return None
        key, _, query = line[start : -len(_SUFFIX)].partition(b"?")
        if _KEY.fullmatch(key) is None:
            return None
        out.embed_key = key.decode("ascii")
    if query:
        if _QUERY.fullmatch(query) is None:
            return None
        for pair in query.split(b"&"):
            name, _, value = pair.partition(b"=")
            if name == b"player":
                out.player = value.decode("ascii")
                break
    # Every line after the first a header with a token for a name (no folded line): one
    # search for a line that is not. Then the headers read here by one scan (a loop over
    # ~15 header lines cost three times that).
    if _NOT_A_HEADER.search(head, first) is not None:
        return None
    for name, value in _WANTED.findall(head, first):
        field = _FIELDS[name.lower()]
        value = value.rstrip(b" \t")
        if field == _CONTENT_LENGTH:
            if out.content_length >= 0 or not value.isdigit():
                return None  # two lengths, or not a plain number
            out.content_length = int(value)
        elif field == _CONNECTION:
            if value.lower() != b"keep-alive":
                return None
        elif field == _FRAMING:
            return None
        elif getattr(out, field) is None:  # the first one, as CIMultiDict.get gives
            setattr(out, field, value.decode("ascii"))
    if out.kind == REPORT:
        return out if out.content_length >= 0 else None
    return out if out.content_length <= 0 else None  # no body: framed by the head alone


def render(
    status: int, headers: dict[str, str], body: bytes | None, date: str | None = None
) -> bytes:
    """The bytes aiohttp writes for ``web.Response(status, headers, body)`` as the
    collector builds it (headers in order, then Content-Type and Content-Length for a body,
    then Date and Server)."""
    parts = [f"HTTP/1.1 {status} {_REASONS[status]}\r\n"]
    parts.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    if body is not None:
        parts.append(f"Content-Length: {len(body)}\r\n")
    parts.append(f"Date: {date or rfc822_formatted_time()}\r\n")
    parts.append(_SERVER_LINE)
    parts.append("\r\n")
    head = "".join(parts).encode("latin-1")
    return head + body if body is not None else head


def render_problem(problem: HTTPProblem, cors: dict[str, str] | None = None) -> bytes:
    """As ``collector.app.problem_response``."""
    import orjson

    headers = problem.headers()
    if cors:
        headers.update(cors)
    headers["Content-Type"] = "application/problem+json"
    return render(problem.status, headers, orjson.dumps(problem.problem()))


class LeanProtocol(asyncio.Protocol):
    """One connection: report posts answered here, anything else handed to aiohttp."""

    __slots__ = (
        "_buffer",
        "_busy",
        "_closing",
        "_idle",
        "_last",
        "_limit",
        "_loop",
        "_peer",
        "_pipeline",
        "_server",
        "_task",
        "_transport",
    )

    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._pipeline: Pipeline = server.pipeline
        self._limit = server.max_body_bytes
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._busy = False  # a report waits for its delivery (a cluster collector)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._peer: str | None = None
        self._last = 0.0
        self._idle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        tcp_keepalive(transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, (tuple, list)) and peer else None
        self._server.lean.add(self)
        self._last = self._loop.time()
        self._idle = self._loop.call_at(self._last + KEEPALIVE_SECONDS, self._check_idle)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._forget()
        self._transport = None
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        if not self._busy:
            self._serve()

    def eof_received(self) -> bool | None:
        return None  # close, as aiohttp does when its client stops sending

    # -- what the server asks for --------------------------------------------------------------

    def close(self) -> None:
        """Stop after the request in progress (aiohttp's ``RequestHandler.close``)."""
        self._closing = True
        if not self._busy and self._transport is not None:
            self._transport.close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 (aiohttp's)
        """Wait for the report in progress (at most ``timeout``), then close."""
        self._closing = True
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=timeout)
        if self._transport is not None:
            self._transport.close()

    # -- the requests ------------------------------------------------------------------------

    def _serve(self) -> None:
        server = self._server
        while self._buffer and not self._closing:
            buffer = self._buffer
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    self._hand_over()
                return
            head = parse_head(buffer[:end]) if end <= MAX_HEAD_BYTES else None
            if head is None or head.content_length > self._limit or server.draining():
                self._hand_over()
                return
            if _access.isEnabledFor(logging.DEBUG):
                self._hand_over()  # the access log is aiohttp's
                return
            total = end + 4 + max(0, head.content_length)
            if len(buffer) < total:
                return  # the rest of the body is on its way
            body = buffer[end + 4 : total]
            self._buffer = buffer[total:]
            server.requests_count += 1
            self._last = self._loop.time()
            if head.kind == REPORT:
                self._answer(head, body)
            elif head.kind == PREFLIGHT:
                self._preflight(head)
            else:
                self._write(render(200, server.keys_headers(), server.keys.ohttp_keys()))
            if self._busy:
                return

    def _answer(self, head: _Head, body: bytes) -> None:
        pipeline = self._pipeline
        try:
            report = Report(
                embed_key=head.embed_key,
                content_type=head.content_type or "",
                body=body,
                ip=pipeline.client_ip.resolve(self._peer, head.xff),
                user_agent=head.ua or "",
                origin=head.origin,
                player=head.player,
                arrival=pipeline.clock(),
            )
            outcome = pipeline.run(report)
            server = self._server
            if outcome.problem is None and server.delivers_at_once:
                # Past the admit step (the Origin is allowed): the usual 204, made once a second
                self._write(server.no_content(report.account, head.origin))
                return
            cors = answer_cors(pipeline, report, head.embed_key, head.origin)
            if outcome.accepted and not server.delivers_at_once:
                self._busy = True
                task = self._loop.create_task(self._deliver(outcome.problem, cors))
                task.add_done_callback(_retrieve)
                self._task = task
                return
            self._write(self._rendered(outcome.problem, cors))
        except HTTPProblem as problem:
            self._write(render_problem(problem))
        except Exception as exc:
            log_unexpected(exc, "/v1/r/{embed_key}")
            self._write(render_problem(HTTPProblem("unexpected error; it was logged")))

    def _preflight(self, head: _Head) -> None:
        server = self._server
        problem, cors = preflight_answer(self._pipeline, server.config, head.embed_key, head.origin)
        self._write(render_problem(problem) if problem is not None else render(204, cors, None))

    async def _deliver(self, problem: HTTPProblem | None, cors: dict[str, str]) -> None:
        try:
            if not await self._pipeline.sink.delivered():
                late = late_problem()
                REPORTS_REJECTED.labels(late.reason).inc()
                self._write(render_problem(late, cors))
            else:
                self._write(self._rendered(problem, cors))
        except Exception as exc:
            log_unexpected(exc, "/v1/r/{embed_key}")
            self._write(render_problem(HTTPProblem("unexpected error; it was logged")))
        finally:
            self._busy = False
            self._task = None
        if self._closing and self._transport is not None:
            self._transport.close()
        elif self._buffer:
            self._serve()

    @staticmethod
    def _rendered(problem: HTTPProblem | None, cors: dict[str, str]) -> bytes:
        if problem is not None:
            return render_problem(problem, cors)
        return render(204, cors, None)

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _hand_over(self) -> None:
        """From here on the connection is aiohttp's, starting with the unanswered bytes."""
        transport = self._transport
        if transport is None:
            return
        self._forget()
        self._transport = None
        buffer, self._buffer = self._buffer, b""
        handler = self._server.aiohttp_protocol()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if buffer:
            handler.data_received(buffer)

    def _check_idle(self) -> None:
        self._idle = None
        if self._transport is None:
            return
        due = self._last + KEEPALIVE_SECONDS
        if self._loop.time() >= due and not self._busy:
            self._transport.close()
        else:
            self._idle = self._loop.call_at(max(due, self._loop.time() + 1.0), self._check_idle)

    def _forget(self) -> None:
        self._server.lean.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class LeanServer(web.Server):
    """aiohttp's server with :class:`LeanProtocol` in front of its ``RequestHandler``."""

    def __init__(
        self, inner: web.Server, app: web.Application, draining: Callable[[], bool]
    ) -> None:
        # The same handler, request factory and RequestHandler options as the runner's own.
        super().__init__(
            inner.request_handler,
            request_factory=inner.request_factory,
            handler_cancellation=inner.handler_cancellation,
            **inner._kwargs,
        )
        self.pipeline = app[PIPELINE]
        self.config = app[COLLECTOR_CONFIG]
        self.keys = app[KEYSTORE]
        self.max_body_bytes = self.config.max_body_bytes
        self.draining = draining
        # A sink that says ``delivers_at_once`` (the in-process aggregator) has every
        # report's events safe when ``submit`` returns: no need to await ``delivered``.
        self.delivers_at_once = bool(getattr(self.pipeline.sink, "delivers_at_once", False))
        self.lean: set[LeanProtocol] = set()
        # The 204 of a report past the admit step, by its (allowed) Origin, for one second:
        # the same bytes for every such report (page origins, never a viewer's data).
        self._no_content: dict[str | None, bytes] = {}
        self._no_content_date = ""

    def no_content(self, account: Account | None, origin: str | None) -> bytes:
        date = rfc822_formatted_time()
        answers = self._no_content
        if date != self._no_content_date or len(answers) >= _NO_CONTENT_ORIGINS:
            answers.clear()
            self._no_content_date = date
        answer = answers.get(origin)
        if answer is None:
            answer = answers[origin] = render(204, cors_headers(account, origin), None, date)
        return answer

    def keys_headers(self) -> dict[str, str]:
        headers = keys_headers(self.config)
        headers["Content-Type"] = KEYS_TYPE
        return headers

    def __call__(self) -> Any:
        return LeanProtocol(self)

    def aiohttp_protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = super().__call__()
        return protocol

    @property
    def connections(self) -> list[Any]:
        return [*super().connections, *self.lean]

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for protocol in list(self.lean):
            protocol.close()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        lean = [protocol.shutdown(timeout) for protocol in list(self.lean)]
        await asyncio.gather(super().shutdown(timeout), *lean)
        self.lean.clear()


class LeanAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server answers report posts on the lean path (if the app
    has the collector's routes). ``draining``: true while a hot restart drains (every
    request then goes to aiohttp, which answers ``Connection: close``)."""

    def __init__(
        self,
        app: web.Application,
        *,
        draining: Callable[[], bool] = lambda: False,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._draining = draining

    async def _make_server(self) -> web.Server:
        inner = await super()._make_server()
        if PIPELINE not in self.app:
            return inner
        return LeanServer(inner, self.app, self._draining)
