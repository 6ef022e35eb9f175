"""The framework baselines: a bare aiohttp + uvloop report handler answering 204, and the
same handler doing one HPKE open per request (the sealed-report ceiling).

    python -m benchmarks.baseline_server --port P [--hpke]

Both read the whole body, as the service does. ``--hpke`` makes an X25519 key, serves it
at GET /v1/keys (``application/ohttp-keys``, like the service) and opens every body with
``cryptography``'s HPKE (the same suite, framing and ``info`` as ``collector/sealed.py``);
a body that does not open gets 400. Prints ``listening on http://HOST:PORT`` when ready.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Sequence

import uvloop
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from collector.keys import HpkeKey
from collector.sealed import HEADER_LEN, INFO_PREFIX

KEY_ID = 1
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_NO_CONTENT = 204


def bare_app() -> web.Application:
    async def report(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=_NO_CONTENT)

    app = web.Application()
    app.router.add_post("/v1/r/{embed_key}", report)
    return app


def hpke_app() -> web.Application:
    key = HpkeKey(KEY_ID, X25519PrivateKey.generate(), 0.0, None)
    private = key.private_key
    config = key.key_config()
    keys_body = struct.pack("!H", len(config)) + config

    async def report(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            _SUITE.decrypt(
                memoryview(body)[HEADER_LEN:], private, info=INFO_PREFIX + body[:HEADER_LEN]
            )
        except (InvalidTag, ValueError):
            return web.Response(status=400)
        return web.Response(status=_NO_CONTENT)

    async def keys(request: web.Request) -> web.Response:
        return web.Response(body=keys_body, content_type="application/ohttp-keys")

    app = web.Application()
    app.router.add_post("/v1/r/{embed_key}", report)
    app.router.add_get("/v1/keys", keys)
    return app


async def serve(app: web.Application, host: str, port: int) -> None:
    import asyncio

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    print(f"listening on http://{host}:{port}", flush=True)
    await asyncio.Event().wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hpke", action="store_true", help="open every body with HPKE")
    args = parser.parse_args(argv)
    app = hpke_app() if args.hpke else bare_app()
    uvloop.run(serve(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
