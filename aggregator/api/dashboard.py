"""The customer dashboard: ``GET /`` (one HTML page) and ``GET /static/{path}`` (its assets).

The page is static; it reads the stats API from the browser with the customer's API token,
which it keeps in ``sessionStorage`` only. The server never sees the token on these routes.
Every file under ``aggregator/api/static/`` is read once through :mod:`importlib.resources`
(so an installed package serves the same files) and served from memory: a path that is not
one of those files is 404, whatever it contains, so no path can leave the folder.

Every answer carries a strict Content-Security-Policy: scripts, styles and requests only
from this origin, no inline code, no framing, no referrer.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

from aiohttp import web

from collector.errors import NotFound

routes = web.RouteTableDef()

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


def _walk(folder: Traversable, prefix: str) -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            found.update(_walk(entry, name + "/"))
            continue
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        found[name] = Asset(body, CONTENT_TYPES[suffix], etag)
    return found


@cache
def assets() -> dict[str, Asset]:
    """Every servable file of ``aggregator/api/static``, by its path relative to that folder."""
    return _walk(files("aggregator.api").joinpath("static"), "")


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {
        **SECURITY_HEADERS,
        "ETag": asset.etag,
        # Revalidate every time: a new release must not run with the old script.
        "Cache-Control": "no-cache",
    }
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = asset.content_type
    return web.Response(body=asset.body, headers=headers)


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    """The dashboard page."""
    return _answer(request, assets()["index.html"])


@routes.get("/static/{path:.+}")
async def static(request: web.Request) -> web.Response:
    """A file of the dashboard (script, style sheet, icon, the chart module)."""
    asset = assets().get(request.match_info["path"])
    if asset is None:
        raise NotFound("no such file of the dashboard", key="path")
    return _answer(request, asset)
