"""The player snippet's JavaScript against the collector's Python: sealed frames and CMCD lines.

A small node script (player-snippet/scripts/crosscheck.js) runs the snippet's own code; these
tests open what it seals with ``cryptography``'s HPKE and with the collector's opener, and
parse what it encodes with the collector's CMCD parser.
"""

from __future__ import annotations

import base64
import json
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from collector import cmcd
from collector.keys import KeyStore
from collector.sealed import open_sealed
from tests.captures import CMCD_CAPTURES
from tests.snippet.conftest import SNIPPET

SCRIPT = SNIPPET / "scripts" / "crosscheck.js"
FIXTURES = CMCD_CAPTURES
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
HEADER_SUITE = b"\x00\x20\x00\x01\x00\x01"
BODY = (
    'cid="stream-42",e=ps,sid="ce20c61d-7daa-493b-9116-e88e0bd5a76f",sn=1,sta=d,'
    "ts=1795480329599,v=2\n"
    'br=(1461),cid="stream-42",e=bc,sid="ce20c61d-7daa-493b-9116-e88e0bd5a76f",sn=3,sta=s,'
    "ts=1795480329658,v=2\n"
)


def run_snippet(node: str, *args: str, stdin: str) -> str:
    done = subprocess.run(
        [node, str(SCRIPT), *args],
        input=stdin.encode(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout.decode()


def seal_with_snippet(node: str, ohttp_keys: bytes, body: str) -> bytes:
    return base64.b64decode(
        run_snippet(node, "seal", base64.b64encode(ohttp_keys).decode(), stdin=body)
    )


def key_config(key_id: int, private_key: X25519PrivateKey) -> bytes:
    """An application/ohttp-keys body with one config, built by hand from RFC 9458."""
    public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    config = struct.pack("!BH", key_id, 0x0020) + public + struct.pack("!HHH", 4, 1, 1)
    return struct.pack("!H", len(config)) + config


@pytest.mark.parametrize("key_id", [0, 7, 255], ids=["key0", "key7", "key255"])
def test_cryptography_opens_what_the_snippet_seals(node: str, key_id: int) -> None:
    private_key = X25519PrivateKey.generate()
    frame = seal_with_snippet(node, key_config(key_id, private_key), BODY)
    hdr = frame[:7]
    assert hdr == bytes([key_id]) + HEADER_SUITE
    assert len(frame) == 7 + 32 + len(BODY.encode()) + 16
    opened = SUITE.decrypt(frame[7:], private_key, info=b"streamtally/1 cmcd\x00" + hdr)
    assert opened.decode() == BODY


def test_a_frame_for_another_key_does_not_open(node: str) -> None:
    frame = seal_with_snippet(node, key_config(1, X25519PrivateKey.generate()), BODY)
    with pytest.raises(InvalidTag):
        SUITE.decrypt(
            frame[7:], X25519PrivateKey.generate(), info=b"streamtally/1 cmcd\x00" + frame[:7]
        )


def test_collector_opens_what_the_snippet_seals_to_its_served_keys(
    node: str, tmp_path: Path
) -> None:
    keys = KeyStore.open(tmp_path / "keys", overlap_seconds=3600)
    body = "".join(json.loads(line)["body"] for line in (FIXTURES / "hlsjs-batch4.jsonl").open())
    frame = seal_with_snippet(node, keys.ohttp_keys(), body)
    opened = open_sealed(frame, keys)
    assert opened.plaintext.decode() == body
    assert opened.key_id == keys.current().key_id
    assert opened.enc == frame[7:39]


def test_snippet_seals_to_the_current_key_after_a_rotation(node: str, tmp_path: Path) -> None:
    keys = KeyStore.open(tmp_path / "keys", overlap_seconds=3600)
    old = keys.current().key_id
    new = keys.rotate().key_id
    assert new != old
    frame = seal_with_snippet(node, keys.ohttp_keys(), BODY)
    assert frame[0] == new
    assert open_sealed(frame, keys).plaintext.decode() == BODY


def test_collector_parses_the_snippets_cmcd_lines(node: str) -> None:
    events = [
        {
            "e": "ps",
            "ts": 1795480329599,
            "v": 2,
            "sid": "a-b",
            "cid": 'say "hi" \\o/',
            "sn": 0,
            "sta": "s",
        },
        {
            "e": "ps",
            "ts": 1795480330019,
            "v": 2,
            "sid": "a-b",
            "cid": "c",
            "sn": 1,
            "sta": "p",
            "msd": 420,
            "br": [1461],
            "bl": [7750],
            "pt": 4250,
        },
        {
            "e": "e",
            "ts": 1795480331000,
            "v": 2,
            "sid": "a-b",
            "cid": "c",
            "sn": 2,
            "ec": ["MEDIA_ERR_DECODE"],
        },
        {"e": "pr", "ts": 1795480332000, "v": 2, "sid": "a-b", "cid": "c", "sn": 3, "pr": 1.5},
    ]
    body = run_snippet(node, "encode", stdin=json.dumps(events))
    parsed = cmcd.parse(body)
    assert parsed.errors == []
    got = [(e.e, e.sn, e.sta, e.cid, e.msd, e.br, e.bl, e.pt, e.ec, e.pr) for e in parsed.events]
    assert got == [
        ("ps", 0, "s", 'say "hi" \\o/', None, None, None, None, None, None),
        ("ps", 1, "p", "c", 420, 1461, 7750, 4250, None, None),
        ("e", 2, None, "c", None, None, None, None, "MEDIA_ERR_DECODE", None),
        ("pr", 3, None, "c", None, None, None, None, None, 1.5),
    ]
