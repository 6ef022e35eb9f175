"""``serve --workers N``: the collector processes own the public port, so every request that
is not theirs (the customer and admin API, the dashboard, health) is passed on, as it came,
to the aggregator process on loopback, and its answer streamed back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

UPSTREAM = web.AppKey("api_upstream", str)
SESSION = web.AppKey("api_session", aiohttp.ClientSession)
# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the message's.
HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def setup_proxy(app: web.Application, upstream: str) -> None:
    app[UPSTREAM] = upstream.rstrip("/")
    app.router.add_route("*", "/{tail:.*}", proxy)
    app.cleanup_ctx.append(session_ctx)


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession(
        auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
    ) as session:
        app[SESSION] = session
        yield


async def proxy(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    body = await request.read()
    url = request.app[UPSTREAM] + request.rel_url.path_qs
    async with request.app[SESSION].request(
        request.method, url, headers=headers, data=body or None, allow_redirects=False
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP},
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(65536):
            await response.write(chunk)
        await response.write_eof()
        return response
