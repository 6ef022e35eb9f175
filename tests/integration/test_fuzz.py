"""Random bytes, random sealed frames and random CMCD lines at a real `streamtally serve`:
never a 5xx, never a crash, the process stays up and keeps accepting good reports."""

from __future__ import annotations

import http.client
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ChDatabase
from tests.integration.conftest import ADMIN_TOKEN, KeyConfig, decode_ohttp_keys, seal_independently
from tests.integration.serveproc import ServeProcess

CTYPES = st.sampled_from(
    [
        "application/cmcd",
        "application/vnd.streamtally.sealed",
        "text/plain",
        "",
        "application/cmcd; charset=utf-8",
    ]
)
KEYS = st.sampled_from(
    ["e", "ts", "sid", "cid", "sn", "sta", "br", "bl", "msd", "ltc", "pt", "pr", "ec", "rc",
     "ttfb", "url", "v", "com.x-y", "", "E", "e e", "1a"]
)  # fmt: skip
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=30).map(lambda s: '"' + s.replace('"', '\\"') + '"'),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz*/:.", max_size=10),
    st.lists(st.integers(-5, 10**6), max_size=3).map(lambda xs: "(" + " ".join(map(str, xs)) + ")"),
    st.just("?1"),
    st.just("?0"),
    st.text(max_size=8),
)
LINES = st.lists(
    st.lists(st.tuples(KEYS, VALUES), max_size=10).map(
        lambda kvs: ",".join(f"{k}={v}" if v else k for k, v in kvs)
    ),
    max_size=12,
).map(lambda lines: "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, clickhouse_server: object
) -> Iterator[tuple[ServeProcess, str, KeyConfig]]:
    import uuid

    import clickhouse_connect

    url = clickhouse_server.url  # type: ignore[attr-defined]
    database = f"fuzz_{uuid.uuid4().hex[:12]}"
    client = clickhouse_connect.get_client(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))
    client.command(f"CREATE DATABASE {database}")
    ch = ChDatabase(url, database)
    serve = ServeProcess(
        Path(tmp_path_factory.mktemp("fuzz")) / "data",
        "--clickhouse-url", ch.url, "--database", ch.database, "--admin-token", ADMIN_TOKEN,
        "--rate-limit-per-second", "100000", "--rate-limit-burst", "100000",
    )  # fmt: skip
    serve.start()
    conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=30)
    conn.request(
        "POST", "/v1/admin/accounts",
        json.dumps({"name": "fuzz", "origins": ["*"], "k": 2}),
        {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
    )  # fmt: skip
    resp = conn.getresponse()
    account = json.loads(resp.read())
    conn.request("GET", "/v1/keys")
    [config] = decode_ohttp_keys(conn.getresponse().read())
    conn.close()
    try:
        yield serve, account["embed_key"], config
    finally:
        assert serve.stop() == 0
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        client.close()


def post(serve: ServeProcess, path: str, body: bytes, ctype: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=30)
    try:
        headers = {"User-Agent": "Mozilla/5.0 Chrome/156.0 Safari/537.36"}
        if ctype:
            headers["Content-Type"] = ctype
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(body=st.binary(max_size=2048), ctype=CTYPES)
def test_random_bytes(server: tuple[ServeProcess, str, KeyConfig], body: bytes, ctype: str) -> None:
    serve, embed_key, _ = server
    assert post(serve, f"/v1/r/{embed_key}", body, ctype) < 500


@FUZZ
@given(lines=LINES)
def test_random_cmcd_lines(server: tuple[ServeProcess, str, KeyConfig], lines: str) -> None:
    serve, embed_key, config = server
    status = post(serve, f"/v1/r/{embed_key}", lines.encode(), "application/cmcd")
    assert status in (204, 400), status
    sealed = seal_independently(lines.encode(), config)
    assert post(serve, f"/v1/r/{embed_key}", sealed, "application/vnd.streamtally.sealed") in (
        204,
        400,
    )


@FUZZ
@given(
    key_id=st.integers(0, 255),
    suite=st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    rest=st.binary(max_size=200),
)
def test_random_sealed_frames(
    server: tuple[ServeProcess, str, KeyConfig],
    key_id: int,
    suite: tuple[int, int, int],
    rest: bytes,
) -> None:
    serve, embed_key, _ = server
    frame = struct.pack("!BHHH", key_id, *suite) + rest
    assert post(serve, f"/v1/r/{embed_key}", frame, "application/vnd.streamtally.sealed") in (400,)


def test_still_up_and_accepting_after_the_fuzzing(
    server: tuple[ServeProcess, str, KeyConfig],
) -> None:
    serve, embed_key, _ = server
    assert serve.alive()
    good = 'cid="stream-42",e=ps,sid="after-fuzz",sn=0,sta=p,ts=1795480000000,v=2\n'
    assert post(serve, f"/v1/r/{embed_key}", good.encode(), "application/cmcd") == 204
    assert "Traceback" not in "".join(serve.output)
