"""Pre-built HTTP requests for the load generators: plain CMCD, or sealed with HPKE.

Every request is built before a measurement starts, so the generator only writes bytes.
Sealed bodies get a fresh HPKE encapsulation each (``collector.sealed.seal``): the server
refuses a repeated ``enc`` (422), so a sealed request can be sent once only. Sealing runs
in worker processes on every core while no server is under load.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from benchmarks.ohttp_keys import KeyConfig
from benchmarks.traffic import Request, Traffic

PLAIN_TYPE = "application/cmcd"
SEALED_TYPE = "application/vnd.streamtally.sealed"
ORIGIN = "https://video.example.com"


@dataclass
class Pool:
    """Requests ready to send, with what each carries (for the correctness check)."""

    requests: list[bytes] = field(default_factory=list)
    events: list[int] = field(default_factory=list)  # event lines per request
    streams: list[str] = field(default_factory=list)
    viewers: list[str] = field(default_factory=list)  # client address of each request
    sealed: bool = False

    def __len__(self) -> int:
        return len(self.requests)

    def body_bytes(self) -> int:
        return sum(len(r) for r in self.requests)


def http_request(
    r: Request, *, host: str, path: str, body: bytes, content_type: str, forwarded: bool = True
) -> bytes:
    """The bytes a browser sends for one report (headers as in the captures)."""
    lines = [
        f"POST {path}?player={r.player} HTTP/1.1",
        f"Host: {host}",
        "Connection: keep-alive",
        f"Content-Length: {len(body)}",
        f"User-Agent: {r.viewer.user_agent}",
        f"Content-Type: {content_type}",
        "Accept: */*",
        f"Origin: {ORIGIN}",
        "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Mode: cors",
        "Sec-Fetch-Dest: empty",
        f"Referer: {ORIGIN}/watch/{r.stream}",
        "Accept-Encoding: gzip, deflate, br, zstd",
        f"Accept-Language: {r.viewer.language}",
    ]
    if forwarded:
        lines.append(f"X-Forwarded-For: {r.viewer.ip}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1") + body


# -- sealing in worker processes -----------------------------------------------------------


def _seal_chunk(args: tuple[list[bytes], int, bytes]) -> list[bytes]:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    from collector.sealed import seal

    bodies, key_id, public = args
    key = X25519PublicKey.from_public_bytes(public)
    return [seal(b, key_id, key) for b in bodies]


def seal_all(bodies: Sequence[bytes], key: KeyConfig, workers: int | None = None) -> list[bytes]:
    """Seal every body to ``key``, each with its own encapsulation, on all cores."""
    workers = workers or len(os.sched_getaffinity(0)) or 1
    if len(bodies) < 2000 or workers == 1:
        return _seal_chunk((list(bodies), key.key_id, key.public_key))
    size = max(1000, len(bodies) // (workers * 8))
    chunks = [
        (list(bodies[i : i + size]), key.key_id, key.public_key)
        for i in range(0, len(bodies), size)
    ]
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as ex:
        out: list[bytes] = []
        for part in ex.map(_seal_chunk, chunks):
            out.extend(part)
    return out


def build(
    traffic: Traffic,
    n: int,
    *,
    host: str,
    path: str,
    key: KeyConfig | None = None,
    forwarded: bool = True,
) -> Pool:
    """The next ``n`` reports of ``traffic`` as requests; sealed to ``key`` if given."""
    reports = traffic.take(n)
    bodies = [r.body for r in reports]
    content_type = PLAIN_TYPE
    if key is not None:
        bodies = seal_all(bodies, key)
        content_type = SEALED_TYPE
    pool = Pool(sealed=key is not None)
    for r, body in zip(reports, bodies, strict=True):
        pool.requests.append(
            http_request(
                r, host=host, path=path, body=body, content_type=content_type, forwarded=forwarded
            )
        )
        pool.events.append(r.events)
        pool.streams.append(r.stream)
        pool.viewers.append(r.viewer.ip)
    return pool


def write_wrk_files(pool: Pool, folder: Path) -> tuple[Path, Path]:
    """The requests as one file plus a file of their lengths, for wrk's Lua script."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "requests.bin"
    index = folder / "requests.idx"
    with data.open("wb") as f:
        for r in pool.requests:
            f.write(r)
    index.write_text("".join(f"{len(r)}\n" for r in pool.requests))
    return data, index
