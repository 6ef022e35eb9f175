"""The collector's HTTP surface: reports, CORS preflights and the public HPKE keys.

``setup_collector`` adds the routes and a cleanup context to an aiohttp application that
the composing service (``aggregator/app.py``) builds; the collector never reaches into the
aggregator: it gets an :class:`AccountDirectory` and a :class:`Sink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from collector.accounts import Account, AccountDirectory
from collector.clientip import ClientIP
from collector.config import CollectorConfig
from collector.dedupe import Deduper
from collector.errors import (
    ConfigError,
    Forbidden,
    HTTPProblem,
    NotFound,
    Overloaded,
    PayloadTooLarge,
)
from collector.geo import load_country_db
from collector.handover import Sink
from collector.keys import KeyStore
from collector.metrics import REPORTS_REJECTED
from collector.pipeline import Pipeline, Report
from collector.ratelimit import RateLimiter
from collector.replay import ReplayGuard
from collector.screen import identifier_in
from collector.strip import Stripper
from collector.useragent import warm_up
from collector.viewer import ViewerKeys

PIPELINE = web.AppKey("pipeline", Pipeline)
KEYSTORE = web.AppKey("keystore", KeyStore)
VIEWERS = web.AppKey("viewers", ViewerKeys)
COLLECTOR_CONFIG = web.AppKey("collector_config", CollectorConfig)

PROBLEM_TYPE = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("streamtally.collector")
HOUSEKEEPING_SECONDS = 30.0


def problem_response(problem: HTTPProblem, headers: dict[str, str] | None = None) -> web.Response:
    all_headers = problem.headers()
    if headers:
        all_headers.update(headers)
    return web.Response(
        status=problem.status,
        body=orjson.dumps(problem.problem()),
        content_type=PROBLEM_TYPE,
        headers=all_headers,
    )


def build_pipeline(
    config: CollectorConfig,
    accounts: AccountDirectory,
    sink: Sink,
    clock: Callable[[], float] = time.time,
    viewers: ViewerKeys | None = None,
    deduper: Deduper | None = None,
) -> tuple[Pipeline, KeyStore, ViewerKeys]:
    """``clock``: the server's wall clock (arrival times, viewer-key days); tests pass a
    test clock so that hours and days pass in seconds. A cluster collector passes the
    ``viewers`` of its owner shards and a ``deduper`` that lets everything through (the
    owner counts each event once, whichever collector it came through)."""
    keys = KeyStore.open(
        config.data_dir / "keys",
        config.key_overlap_seconds,
        rotation_seconds=config.key_rotation_seconds,
    )
    # The user-agent parsers are built now (~0.2 s), not on the first report, and before the
    # start-up heap is frozen out of the cyclic GC (aggregator/cli.py).
    warm_up()
    if viewers is None:
        viewers = ViewerKeys(grace_seconds=config.viewer_key_grace_seconds, clock=clock)
    pipeline = Pipeline(
        accounts=accounts,
        keys=keys,
        sink=sink,
        stripper=Stripper(load_country_db(config.geoip_db)),
        client_ip=ClientIP(config.trusted_proxies),
        viewers=viewers,
        replay=ReplayGuard(config.replay_window_seconds, config.replay_max_entries),
        limiter=RateLimiter(config.rate_limit_per_second, config.rate_limit_burst),
        address_limiter=RateLimiter(
            config.address_rate_limit_per_second, config.address_rate_limit_burst
        ),
        deduper=deduper or Deduper(idle_seconds=config.session_idle_seconds),
        max_body_bytes=config.max_body_bytes,
        clock=clock,
    )
    return pipeline, keys, viewers


def setup_collector(
    app: web.Application,
    config: CollectorConfig,
    accounts: AccountDirectory,
    sink: Sink,
    clock: Callable[[], float] = time.time,
    viewers: ViewerKeys | None = None,
    deduper: Deduper | None = None,
) -> None:
    pipeline, keys, viewers = build_pipeline(config, accounts, sink, clock, viewers, deduper)
    app[PIPELINE] = pipeline
    app[KEYSTORE] = keys
    app[VIEWERS] = viewers
    app[COLLECTOR_CONFIG] = config
    app.router.add_post("/v1/r/{embed_key}", post_report)
    app.router.add_route("OPTIONS", "/v1/r/{embed_key}", preflight)
    app.router.add_get("/v1/keys", get_keys)
    app.cleanup_ctx.append(housekeeping)


async def housekeeping(app: web.Application) -> AsyncIterator[None]:
    """Destroy expired viewer secrets; rotate HPKE keys when due, destroy those past their
    overlap, and pick up keys rotated by another process (``KeyStore.maintain``)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            app[VIEWERS].rotate()  # first, and unconditionally: invariant 2 depends on it
            try:
                if app[KEYSTORE].maintain() is not None:
                    log.info("HPKE key rotated (key_rotation_seconds)")
            except ConfigError as exc:  # a broken key file: keep the keys already loaded
                log.error("keys not reloaded: %s", exc)
            except OSError as exc:  # e.g. a full disk: try again at the next round
                log.error("keys not maintained: %s", exc.strerror)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def cors_headers(account: Account | None, origin: str | None) -> dict[str, str]:
    if origin is None or account is None or not account.allows_origin(origin):
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "Retry-After",
        "Vary": "Origin",
    }


def answer_cors(
    pipeline: Pipeline, report: Report, embed_key: str, origin: str | None
) -> dict[str, str]:
    """The CORS headers of a report's answer. The admit step already looked the account
    up; refusals before it look it up here."""
    account = report.account
    if account is None and origin is not None:
        account = pipeline.accounts.by_embed_key(embed_key)
    return cors_headers(account, origin)


def late_problem() -> Overloaded:
    """The answer when a report's events were not passed on in time (a cluster collector)."""
    return Overloaded("the report could not be passed on in time; retry", retry_after=1)


async def post_report(request: web.Request) -> web.StreamResponse:
    """What the lean path (``collector/lean.py``) answers too, byte for byte: a change
    here is a change there."""
    pipeline = request.app[PIPELINE]
    config = request.app[COLLECTOR_CONFIG]
    embed_key = request.match_info["embed_key"]
    origin = request.headers.get("Origin")
    limit = config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        problem = PayloadTooLarge(f"report body over the limit of {limit} bytes")
        REPORTS_REJECTED.labels(problem.reason).inc()
        return problem_response(
            problem, cors_headers(pipeline.accounts.by_embed_key(embed_key), origin)
        )
    body = await request.content.read(limit + 1)
    report = Report(
        embed_key=embed_key,
        content_type=request.headers.get("Content-Type", ""),
        body=body,
        ip=pipeline.client_ip.resolve(request.remote, request.headers.get("X-Forwarded-For")),
        user_agent=request.headers.get("User-Agent", ""),
        origin=origin,
        player=request.query.get("player"),
        arrival=pipeline.clock(),
    )
    outcome = pipeline.run(report)
    cors = answer_cors(pipeline, report, embed_key, origin)
    if outcome.accepted and not await pipeline.sink.delivered():
        late = late_problem()
        REPORTS_REJECTED.labels(late.reason).inc()
        return problem_response(late, cors)
    if outcome.problem is not None:
        return problem_response(outcome.problem, cors)
    return web.Response(status=204, headers=cors)


def preflight_answer(
    pipeline: Pipeline, config: CollectorConfig, embed_key: str, origin: str | None
) -> tuple[HTTPProblem | None, dict[str, str]]:
    """A CORS preflight's answer: a problem, or 204 with these headers (and the lean path's)."""
    account = pipeline.accounts.by_embed_key(embed_key)
    cors = cors_headers(account, origin)
    if not cors:
        if account is None:
            return NotFound("unknown embed key", key="embed_key"), {}
        return Forbidden("the page's Origin is not among the account's origins", key="Origin"), {}
    cors.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": str(config.cors_max_age_seconds),
        }
    )
    return None, cors


async def preflight(request: web.Request) -> web.StreamResponse:
    problem, cors = preflight_answer(
        request.app[PIPELINE],
        request.app[COLLECTOR_CONFIG],
        request.match_info["embed_key"],
        request.headers.get("Origin"),
    )
    if problem is not None:
        return problem_response(problem)
    return web.Response(status=204, headers=cors)


KEYS_TYPE = "application/ohttp-keys"


def keys_headers(config: CollectorConfig) -> dict[str, str]:
    """GET /v1/keys's headers besides its Content-Type (and the lean path's)."""
    return {
        "Cache-Control": f"public, max-age={config.keys_max_age_seconds}",
        "Access-Control-Allow-Origin": "*",
    }


async def get_keys(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=request.app[KEYSTORE].ohttp_keys(),
        content_type=KEYS_TYPE,
        headers=keys_headers(request.app[COLLECTOR_CONFIG]),
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTPProblem into its problem document; anything unexpected into a bare 500.

    The log line of an unexpected error names the exception type and where it happened,
    never its message or the request (either could carry a client's data).
    """
    try:
        return await handler(request)
    except HTTPProblem as problem:
        return problem_response(problem)
    except web.HTTPException:
        raise
    except Exception as exc:
        log_unexpected(exc, loggable_path(request))
        return problem_response(HTTPProblem("unexpected error; it was logged"))


def log_unexpected(exc: Exception, path: str) -> None:
    """The exception's type and where it happened; never its message (it could carry a
    client's data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = ", ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[-4:])
    log.error("unexpected %s in %s at %s", type(exc).__name__, path, where)


def loggable_path(request: web.BaseRequest) -> str:
    """The request's path for a log line; its route's template (``/v1/r/{embed_key}``) if
    the path holds something shaped like an identifier (a client chose the path)."""
    path = request.rel_url.path
    if identifier_in(path) is None:
        return path
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "(path withheld)"


class PrivateAccessLogger(AbstractAccessLogger):
    """The access log, at DEBUG level: method, path, status, size and time. Never the
    client's address, user agent, referer or query string (aiohttp's default format has
    the first three). Off unless --log-level debug: a line per report costs throughput."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            '"%s %s" %s %s %.4fs',
            request.method,
            loggable_path(request),
            response.status,
            response.body_length,
            time,
        )
