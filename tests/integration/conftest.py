"""A running StreamTally (the real app factory, a real aiohttp server on 127.0.0.1) against
the real ClickHouse HTTP server, plus an independent HPKE encoder for sealed reports.

The test server trusts X-Forwarded-For from 127.0.0.1, so a test chooses each report's
client IP with the ``ip=`` argument of :meth:`Running.post`.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from aggregator.app import RUNNER_OPTIONS, create_app
from aggregator.config import AggregatorConfig
from aggregator.opmetrics import OPERATOR_LISTENER
from collector.config import CollectorConfig
from collector.lean import LeanAppRunner
from tests.conftest import ChDatabase

ADMIN_TOKEN = "test-admin-token-0123456789"
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
PLAIN = "application/cmcd"
SEALED = "application/vnd.streamtally.sealed"
ORIGIN = "https://player.example"


# ---- an independent sealer: RFC 9458 key configs in, design.md frames out ------------------


@dataclass(frozen=True)
class KeyConfig:
    key_id: int
    kem_id: int
    public_key: bytes
    suites: tuple[tuple[int, int], ...]


def decode_ohttp_keys(body: bytes) -> list[KeyConfig]:
    """RFC 9458 section 3.2: each config prefixed by a 2-byte length."""
    configs = []
    pos = 0
    while pos < len(body):
        (length,) = struct.unpack_from("!H", body, pos)
        cfg = body[pos + 2 : pos + 2 + length]
        pos += 2 + length
        key_id, kem_id = struct.unpack_from("!BH", cfg, 0)
        assert kem_id == 0x0020
        public = cfg[3 : 3 + 32]
        (algs_len,) = struct.unpack_from("!H", cfg, 35)
        algs = cfg[37 : 37 + algs_len]
        suites = tuple(struct.unpack_from("!HH", algs, i) for i in range(0, len(algs), 4))
        configs.append(KeyConfig(key_id, kem_id, public, suites))
    return configs


def seal_independently(plaintext: bytes, config: KeyConfig) -> bytes:
    hdr = struct.pack("!BHHH", config.key_id, 0x0020, 0x0001, 0x0001)
    info = b"streamtally/1 cmcd\x00" + hdr
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    enc_and_ct = suite.encrypt(
        plaintext, X25519PublicKey.from_public_bytes(config.public_key), info
    )
    return hdr + enc_and_ct


# ---- the running service ------------------------------------------------------------------


@dataclass
class Running:
    url: str
    app: web.Application
    http: aiohttp.ClientSession
    data_dir: Path
    ch: ChDatabase
    accounts: list[dict[str, Any]] = field(default_factory=list)
    # Reports go on connections of their own, as a player's do (an admin call first would
    # hand its connection to aiohttp for good: collector/lean.py).
    player_http: aiohttp.ClientSession | None = None

    async def admin(self, method: str, path: str, json: Any = None) -> aiohttp.ClientResponse:
        return await self.http.request(
            method,
            self.url + path,
            json=json,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )

    async def create_account(
        self, name: str = "acme", origins: tuple[str, ...] = (ORIGIN,), k: int = 2
    ) -> dict[str, Any]:
        resp = await self.admin(
            "POST", "/v1/admin/accounts", {"name": name, "origins": list(origins), "k": k}
        )
        assert resp.status == 201, await resp.text()
        account: dict[str, Any] = await resp.json()
        self.accounts.append(account)
        return account

    async def post(
        self,
        embed_key: str,
        body: bytes | str,
        *,
        ctype: str = PLAIN,
        ip: str = "198.51.100.7",
        ua: str = CHROME_UA,
        origin: str | None = ORIGIN,
        player: str | None = "hls.js",
        headers: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        hdrs = {"Content-Type": ctype, "User-Agent": ua, "X-Forwarded-For": ip}
        if origin is not None:
            hdrs["Origin"] = origin
        if headers:
            hdrs.update(headers)
        path = f"/v1/r/{embed_key}" + (f"?player={player}" if player else "")
        data = body.encode() if isinstance(body, str) else body
        resp = await (self.player_http or self.http).post(self.url + path, data=data, headers=hdrs)
        await resp.read()
        return resp

    async def keys(self) -> list[KeyConfig]:
        resp = await self.http.get(self.url + "/v1/keys")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/ohttp-keys"
        return decode_ohttp_keys(await resp.read())

    async def flush(self) -> dict[str, Any]:
        resp = await self.admin("POST", "/v1/admin/flush")
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result

    async def stats(self, token: str, **params: str) -> dict[str, Any]:
        resp = await self.http.get(
            self.url + "/v1/stats", params=params, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result

    @property
    def operator_url(self) -> str:
        """The operator-only metrics listener (``metrics_listen``), not the public port."""
        url = self.app[OPERATOR_LISTENER].url
        assert url is not None, "the metrics listener is off"
        return url

    async def metrics(self) -> str:
        resp = await self.http.get(self.operator_url + "/metrics")
        assert resp.status == 200
        return await resp.text()


class ServeLikeServer(TestServer):
    """A test server with the runner ``streamtally serve`` uses: report posts take the lean
    path (collector/lean.py), everything else aiohttp's, as in production."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return LeanAppRunner(self.app, **kwargs)


def make_configs(
    data_dir: Path, ch: ChDatabase, **overrides: Any
) -> tuple[CollectorConfig, AggregatorConfig]:
    collector = {
        "data_dir": data_dir,
        "trusted_proxies": ("127.0.0.1/32",),
        "metrics_listen": "127.0.0.1:0",  # a free port of its own: tests run side by side
    }
    aggregator = {
        "clickhouse_url": ch.url,
        "database": ch.database,
        "admin_token": ADMIN_TOKEN,
        "flush_seconds": 3600.0,  # tests flush explicitly
    }
    c_fields = set(CollectorConfig.__dataclass_fields__)
    for key, value in overrides.items():
        (collector if key in c_fields else aggregator)[key] = value
    return CollectorConfig(**collector), AggregatorConfig(**aggregator)


@pytest.fixture
async def running(
    tmp_path: Path, ch_database: ChDatabase, request: pytest.FixtureRequest
) -> AsyncIterator[Running]:
    """A fresh StreamTally; ``@pytest.mark.settings(name=value, ...)`` overrides settings."""
    marker = request.node.get_closest_marker("settings")
    overrides = dict(marker.kwargs) if marker else {}
    collector_config, aggregator_config = make_configs(tmp_path / "data", ch_database, **overrides)
    app = await create_app(collector_config, aggregator_config)
    server = ServeLikeServer(app, host="127.0.0.1")
    await server.start_server(**RUNNER_OPTIONS)
    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as player_http:
        yield Running(
            url=str(server.make_url("")).rstrip("/"),
            app=app,
            http=http,
            data_dir=tmp_path / "data",
            ch=ch_database,
            player_http=player_http,
        )
    await server.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "settings(**kw): setting overrides for `running`")
