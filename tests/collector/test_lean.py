"""collector/lean.py's head parser: what it reads, and every odd head it leaves to aiohttp."""

from __future__ import annotations

import pytest

from collector.lean import KEYS, PREFLIGHT, REPORT, parse_head

GOOD = (
    b"POST /v1/r/k3y-_.~?player=hls.js&x=1 HTTP/1.1\r\nHost: t\r\n"
    b"Content-Type: application/cmcd \r\nUser-Agent:  Mozilla/5.0 (X11)\r\n"
    b"origin: https://a.example\r\nX-Forwarded-For: 1.2.3.4, 5.6.7.8\r\n"
    b"Content-Length: 42\r\nConnection: Keep-Alive\r\nAccept: */*"
)


def test_a_report_head_is_read() -> None:
    head = parse_head(GOOD)
    assert head is not None
    assert head.kind == REPORT
    assert head.embed_key == "k3y-_.~"
    assert head.player == "hls.js"
    assert head.content_type == "application/cmcd"
    assert head.ua == "Mozilla/5.0 (X11)"
    assert head.origin == "https://a.example"
    assert head.xff == "1.2.3.4, 5.6.7.8"
    assert head.content_length == 42


def test_the_first_of_repeated_headers_counts_as_aiohttp_reads_it() -> None:
    head = parse_head(GOOD + b"\r\nX-Forwarded-For: 9.9.9.9\r\nOrigin: https://b.example")
    assert head is not None
    assert (head.xff, head.origin) == ("1.2.3.4, 5.6.7.8", "https://a.example")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"OPTIONS /v1/r/abc HTTP/1.1\r\nOrigin: https://a.example", PREFLIGHT),
        (b"GET /v1/keys HTTP/1.1\r\nHost: t", KEYS),
        (b"GET /v1/keys HTTP/1.1", KEYS),
    ],
    ids=["preflight", "keys", "keys-no-headers"],
)
def test_preflights_and_keys_are_read(raw: bytes, kind: int) -> None:
    head = parse_head(raw)
    assert head is not None
    assert head.kind == kind


ODD = {
    "chunked": GOOD.replace(b"Content-Length: 42", b"Transfer-Encoding: chunked"),
    "chunked-and-length": GOOD + b"\r\nTransfer-Encoding: chunked",
    "expect": GOOD + b"\r\nExpect: 100-continue",
    "upgrade": GOOD + b"\r\nUpgrade: websocket",
    "connection-close": GOOD.replace(b"Keep-Alive", b"close"),
    "no-length": GOOD.replace(b"Content-Length: 42\r\n", b""),
    "two-lengths": GOOD + b"\r\nContent-Length: 42",
    "signed-length": GOOD.replace(b"Length: 42", b"Length: +42"),
    "http-1.0": GOOD.replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "non-ascii": GOOD.replace(b"(X11)", b"(X11) \xc3\xa9"),
    "control-byte": GOOD.replace(b"(X11)", b"(X11)\x01"),
    "bare-lf": GOOD.replace(b"\r\nHost", b"\nHost"),
    "bare-cr": GOOD.replace(b"\r\nHost", b"\rHost"),
    "folded-line": GOOD + b"\r\n continued",
    "space-before-colon": GOOD + b"\r\nX-Thing : 1",
    "no-colon": GOOD + b"\r\nX-Thing",
    "percent-key": GOOD.replace(b"k3y-_.~", b"k%33y"),
    "slash-in-key": GOOD.replace(b"k3y-_.~", b"k/y"),
    "empty-key": GOOD.replace(b"k3y-_.~", b""),
    "percent-query": GOOD.replace(b"hls.js", b"hls%2Ejs"),
    "plus-query": GOOD.replace(b"hls.js", b"hls+js"),
    "bare-query-name": GOOD.replace(b"&x=1", b"&x"),
    "other-route": GOOD.replace(b"/v1/r/", b"/v1/stats/"),
    "other-method": GOOD.replace(b"POST", b"PUT", 1),
    "preflight-with-body": b"OPTIONS /v1/r/abc HTTP/1.1\r\nContent-Length: 3",
    "keys-with-query": b"GET /v1/keys?x=1 HTTP/1.1",
}


@pytest.mark.parametrize("raw", list(ODD.values()), ids=list(ODD))
def test_odd_heads_go_to_aiohttp(raw: bytes) -> None:
    assert parse_head(raw) is None
