"""The identifier screen: what looks like an identifier is found wherever it sits."""

from __future__ import annotations

import time

import pytest

from collector.screen import REASONS, identifier_in


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("bob@example.com", "email", id="email"),
        pytest.param("live-Bob.Smith+tv@mail.example.org-hd", "email", id="email-inside"),
        pytest.param("203.0.113.7", "ip", id="ipv4"),
        pytest.param("cam-10.0.0.12-main", "ip", id="ipv4-inside"),
        pytest.param("2001:db8:7a7a::4321", "ip", id="ipv6"),
        pytest.param("[2001:DB8::7]:443", "ip", id="ipv6-bracketed-upper"),
        pytest.param("fe80::21a:2bff:fe3c:4d5e%eth0", "ip", id="ipv6-link-local-zone"),
        pytest.param("00:1a:2b:3c:4d:5e", "ip", id="mac-address"),
        pytest.param("https://cdn.example/v.m3u8?token=abc", "url", id="url-query"),
        pytest.param("https://user:pw@cdn.example/v.m3u8", "url", id="url-userinfo"),
        pytest.param("page?uid=42", "url", id="query-without-scheme"),
        pytest.param("a&user=bob", "url", id="query-pair"),
        pytest.param("4915112345678", "digits", id="phone-digits"),
        pytest.param("cust-1234567", "digits", id="seven-digits"),
        pytest.param("+49 151 1234 5678", "digits", id="phone-spaced"),
        pytest.param("١٢٣٤٥٦٧٨", "digits", id="arabic-indic-digits"),
        pytest.param("9f3c2a7e-1b4d-4e8f-a0c2-7d5e6f8a9b0c", "uuid", id="uuid"),
        pytest.param("9F3C2A7E1B4D4E8FA0C27D5E6F8A9B0C", "uuid", id="uuid-no-hyphens"),
    ],
)
def test_identifiers_are_found(value: str, reason: str) -> None:
    assert identifier_in(value) == reason
    assert reason in REASONS


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("stream-42", id="stream-42"),
        pytest.param("Champions League Final", id="words"),
        pytest.param("match-2024-01-15", id="date-with-dashes"),
        pytest.param("news 24/7", id="slash"),
        pytest.param("live:main", id="one-colon"),
        pytest.param("12:30:45", id="clock-time"),
        pytest.param("concert-123456", id="six-digits"),
        pytest.param("https://cdn.example/live/stream.m3u8", id="url-without-query"),
        pytest.param("fe80::1", id="two-group-ipv6"),
        pytest.param("v1.2.3", id="version"),
        pytest.param("", id="empty"),
    ],
)
def test_ordinary_names_pass(value: str) -> None:
    assert identifier_in(value) is None


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("z" * 8000 + "://", id="long-scheme-run"),
        pytest.param("x@" + "z" * 8000, id="long-after-at"),
        pytest.param("f" * 8000 + ":", id="long-hex-run-colon"),
        pytest.param("1." * 4000, id="long-dotted-digits"),
        pytest.param("stream-name " * 600, id="long-words"),
        pytest.param("?" + "z" * 8000, id="long-query-name"),
    ],
)
def test_the_screen_is_linear_on_crafted_text(value: str) -> None:
    # a quadratic search would take seconds on 8,000 characters; this one takes ~1 ms
    started = time.perf_counter()
    identifier_in(value)
    assert time.perf_counter() - started < 0.1
