"""Draining before a hot restart: keep-alive clients are told to leave, not cut off.

Once ``SIGHUP`` has stopped the accepts, the old code still answers what comes in on the
connections it holds (requests in flight, and a keep-alive client's next request within the
grace period). Each of those answers carries ``Connection: close``, so that the client
opens its next connection, which waits in the listening socket's backlog for the new code,
instead of sending its next report on a connection the old code is about to close (the
report would then meet a closed connection: lost, unless the client resends it as browsers
do). A connection that stays idle through the whole grace period is closed then; a request
racing that close has had no byte of an answer, which is the case clients resend.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import hdrs, web

__all__ = ["DRAINING", "MAX_SECONDS", "QUIET_SECONDS", "install", "start", "until_quiet"]

# The grace period ends when no request has come in for this long (every busy keep-alive
# client has then been answered "Connection: close" and left), or at the latest after
# MAX_SECONDS; connections accepted just before the accepts stopped send their request in
# it too. New connections wait in the backlog meanwhile.
QUIET_SECONDS: Final = 0.2
MAX_SECONDS: Final = 1.0


class _Flag:
    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False


DRAINING: Final = web.AppKey("draining", _Flag)


async def _close_while_draining(request: web.Request, response: web.StreamResponse) -> None:
    if request.app[DRAINING].on:
        # aiohttp runs this hook after it has set the headers from keep_alive: force_close
        # alone would close the connection after the answer without saying so (the client's
        # next request would meet a reset), so the header is set here too.
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"


def install(app: web.Application) -> None:
    """Before the app is frozen: every answer prepared while draining closes its connection."""
    app[DRAINING] = _Flag()
    app.on_response_prepare.append(_close_while_draining)


def start(app: web.Application) -> None:
    """From now on, every answer says ``Connection: close``."""
    app[DRAINING].on = True


async def until_quiet(
    runner: web.BaseRunner, quiet: float = QUIET_SECONDS, most: float = MAX_SECONDS
) -> None:
    """Wait until every connection is gone or none has brought a request for ``quiet``
    seconds (at most ``most`` seconds): what is left is idle keep-alive connections."""
    server = runner.server
    if server is None:
        return
    loop = asyncio.get_running_loop()
    started = quiet_since = loop.time()
    count = server.requests_count
    while server.connections:
        await asyncio.sleep(0.01)
        now = loop.time()
        if server.requests_count != count:
            count, quiet_since = server.requests_count, now
        elif now - quiet_since >= quiet or now - started >= most:
            return
