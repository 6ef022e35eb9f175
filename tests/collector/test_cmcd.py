"""collector/cmcd.py: CMCD v2 event-mode bodies, checked against the real player captures
and, value by value, against http_sf (the reference RFC 9651 parser)."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import http_sf
import pytest

from collector.cmcd import (
    KNOWN_KEYS,
    MAX_LINE_LENGTH,
    MAX_LINES,
    CmcdEvent,
    LineError,
    ValueType,
    parse,
)
from tests.captures import CMCD_CAPTURES

FIXTURES = CMCD_CAPTURES
FIXTURE_FILES = sorted(FIXTURES.glob("*.jsonl"))

SID = "f4804fb9-2fbc-4f21-abea-e74bec0ba6e1"
URL = "http://127.0.0.1:8080/media/hls/v0/seg000.m4s"
GOOD = f'br=(1461),cid="stream-42",e=t,sf=h,sid="{SID}",sn=0,sta=p,ts=1795480022515,v=2'


@cache
def requests(name: str) -> tuple[dict[str, Any], ...]:
    with (FIXTURES / f"{name}.jsonl").open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f)


def bodies(name: str) -> list[str]:
    return [r["body"] for r in requests(name) if r["method"] == "POST"]


def events(name: str) -> list[CmcdEvent]:
    """Every event of a capture, in the order the collector received them."""
    out: list[CmcdEvent] = []
    for body in bodies(name):
        parsed = parse(body)
        assert parsed.errors == []
        out.extend(parsed.events)
    return out


def one_line(line: str) -> CmcdEvent | LineError:
    parsed = parse(line + "\n")
    assert len(parsed.events) + len(parsed.errors) == 1
    return parsed.events[0] if parsed.events else parsed.errors[0]


# --- the reference: http_sf's dictionary + StreamTally's type rules -----------------------


def _sf_convert(vtype: ValueType, value: Any) -> Any:
    """The value CmcdEvent should hold for http_sf's ``value``; raise TypeError if wrong."""

    def is_int(x: Any) -> bool:
        return type(x) is int

    def is_str(x: Any) -> bool:
        return type(x) is str

    if vtype is ValueType.INTEGER and is_int(value):
        return value
    if vtype is ValueType.NUMBER and (is_int(value) or type(value) is Decimal):
        return float(value)
    if vtype is ValueType.STRING and is_str(value):
        return value
    if vtype is ValueType.TOKEN and type(value) is http_sf.Token:
        return str(value)
    if vtype is ValueType.BOOLEAN and type(value) is bool:
        return value
    if vtype is ValueType.STRING_LIST:  # strings, or integers as their decimal strings

        def code(x: Any) -> Any:
            return str(x) if is_int(x) else x

        if is_str(value) or is_int(value):
            return code(value)
        if type(value) is list and all(is_str(i) or is_int(i) for i, _ in value):
            return code(value[0][0]) if value else None
    if vtype is ValueType.INTEGER_LIST:
        if is_int(value):
            return value
        if type(value) is list and all(is_int(item) for item, _ in value):
            return value[0][0] if value else None
    raise TypeError(vtype)


SYNTAX: tuple[str | None, str] = (None, " at column ")


def expected_outcome(line: str, number: int = 1) -> CmcdEvent | tuple[str | None, str]:
    """What parse() must make of one line, derived from http_sf: the event, or the
    (key, detail-prefix) of the error; SYNTAX if http_sf rejects the line."""
    try:
        members: Any = http_sf.parse(line.encode(), tltype="dictionary")
    except http_sf.StructuredFieldError:
        return SYNTAX
    if "v" in members:
        version = members["v"][0]
        if type(version) is not int:
            return ("v", "expected an integer")
        if version != 2:
            return ("v", f"unsupported CMCD version {version}")
    for required in ("e", "ts"):
        if required not in members:
            return (required, "missing required key")
    values: dict[str, Any] = {}
    for key, (value, _params) in members.items():
        spec = KNOWN_KEYS.get(key)
        if spec is None or key == "v":
            continue
        try:
            values[key] = _sf_convert(spec.type, value)
        except TypeError:
            return (key, "expected a")
    return CmcdEvent(number, **values)


def assert_matches_reference(line: str) -> None:
    expected = expected_outcome(line)
    got = one_line(line)
    if isinstance(expected, CmcdEvent):
        assert got == expected
    elif expected is SYNTAX:
        assert isinstance(got, LineError), f"accepted a line http_sf rejects: {line!r}"
        assert " at column " in got.detail
    else:
        assert isinstance(got, LineError)
        key, detail = expected
        assert got.key == key
        assert got.detail.startswith(detail)


# --- the real captures --------------------------------------------------------------------


def test_all_captures_are_found() -> None:
    assert len(FIXTURE_FILES) >= 13, f"fixtures missing under {FIXTURES}"


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_capture_parses_without_errors(path: Path) -> None:
    posts = bodies(path.stem)
    assert posts
    for body in posts:
        parsed = parse(body)
        assert parsed.errors == []
        lines = body.split("\n")
        assert len(parsed.events) == sum(1 for line in lines if line)
        assert [ev.line for ev in parsed.events] == list(range(1, len(parsed.events) + 1))
        for ev in parsed.events:
            assert ev.e
            assert ev.ts > 1_700_000_000_000
            assert ev.cid == ("dashjs" if path.stem.startswith("dashjs") else "stream-42")
            assert ev.sid is not None
            assert len(ev.sid) == 36


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_capture_lines_match_http_sf(path: Path) -> None:
    for body in bodies(path.stem):
        for line in body.splitlines():
            assert_matches_reference(line)


def test_hlsjs_main_full_playback() -> None:
    evs = events("hlsjs-main")
    assert len(evs) == 58
    assert [ev.sn for ev in evs] == list(range(58))
    assert {ev.sid for ev in evs} == {SID}
    assert {ev.sf for ev in evs} == {"h"}
    # start, play, pause, play, stall, play, stall, play, seek, ..., ended
    states = [ev.sta for ev in evs if ev.e == "ps"]
    assert states == ["d", "s", "p", "a", "p", "r", "p", "r", "p", "k", "r", "p", "e"]
    assert [ev.br for ev in evs if ev.e == "bc"] == [1461, 345, 1461]
    assert [ev.pr for ev in evs if ev.e == "pr"] == [1.0, 1.5, 1.0]
    assert [ev.e for ev in evs].count("ce") == 1
    assert [ev.e for ev in evs].count("t") == 11


def test_hlsjs_main_segment_responses() -> None:
    rr = [ev for ev in events("hlsjs-main") if ev.e == "rr"]
    assert len(rr) == 27
    first = rr[0]
    assert (first.url, first.rc, first.ttfb, first.ttlb) == (URL, 200, 7, 10)
    assert (first.br, first.bl, first.mtp, first.st) == (1461, None, 1500, "v")
    assert all(ev.rc == 200 and ev.url and ev.url.startswith("http://") for ev in rr)
    # the stall: segments held back 9 s, reported while rebuffering
    assert [(ev.ttfb, ev.sta) for ev in rr if ev.ttfb and ev.ttfb > 9000] == [
        (9004, "r"),
        (9005, "r"),
    ]


def test_hlsjs_fatal_manifest_404() -> None:
    evs = events("hlsjs-fatal-manifest404")
    errors = [ev for ev in evs if ev.e == "e"]
    assert len(errors) == 1
    assert (errors[0].ec, errors[0].sta, errors[0].sn) == ("manifestLoadError", "f", 4)
    assert [ev.sta for ev in evs if ev.e == "ps"] == ["d", "s", "f"]
    assert all(ev.ec is None for ev in evs if ev.e != "e")


@pytest.mark.parametrize(
    ("name", "sn"), [("shaka-main", 7), ("shaka-main-debug", 8)], ids=["minified", "debug"]
)
def test_shaka_startup_delay_on_exactly_one_event(name: str, sn: int) -> None:
    evs = events(name)
    with_msd = [ev for ev in evs if ev.msd is not None]
    assert [(ev.msd, ev.e, ev.sn) for ev in with_msd] == [(207, "rr", sn)]
    assert {ev.sf for ev in evs if ev.sf} == {"d"}


def test_shaka_minified_sends_no_states_debug_does() -> None:
    assert [ev for ev in events("shaka-main") if ev.e == "ps" or ev.sta] == []
    debug_states = [ev.sta for ev in events("shaka-main-debug") if ev.e == "ps"]
    assert debug_states[:3] == ["r", "p", "a"]
    assert debug_states[-2:] == ["a", "e"]
    assert {"m", "um"} <= {ev.e for ev in events("shaka-main")}


def test_shaka_status410_retries_identical_events() -> None:
    evs = events("shaka-status410")
    assert [(ev.sn, ev.msd) for ev in evs if ev.msd is not None] == [(2, 191), (2, 191)]
    assert evs[1] == evs[2]


def test_hlsjs_batch4_bodies_carry_several_lines() -> None:
    per_body = [parse(body).events for body in bodies("hlsjs-batch4")]
    assert [len(evs) for evs in per_body] == [4, 4, 4, 4, 4, 4, 4, 3]
    assert all([ev.line for ev in evs] == list(range(1, len(evs) + 1)) for evs in per_body)
    assert [ev.sn for evs in per_body for ev in evs] == list(range(31))


def test_hlsjs_customkeys_ignored_and_escaped_string_survives() -> None:
    evs = events("hlsjs-customkeys")
    assert len(evs) == 7
    assert all(ev.sn is None and ev.sf is None for ev in evs)  # restricted by includeKeys
    custom = [ev for ev in evs if ev.e == "ce"]
    # the second ce line carries com.example-btn="x\"y": the keys after it still read right
    assert [(ev.line, ev.sta, ev.ts, ev.sid) for ev in custom] == [
        (1, "p", 1795480812077, "17b9791d-921f-4fc5-b8d6-3520c20cb5c5"),
        (1, "p", 1795480813083, "17b9791d-921f-4fc5-b8d6-3520c20cb5c5"),
    ]
    assert {f.name for f in fields(CmcdEvent)}.isdisjoint({"cen", "com.example-n"})


def test_hlsjs_status429_duplicate_bodies_parse_identically() -> None:
    posts = bodies("hlsjs-status429")
    by_body: dict[str, list[CmcdEvent]] = {}
    for body in posts:
        evs = parse(body).events
        assert by_body.setdefault(body, evs) == evs
    assert len(by_body) < len(posts)  # there were re-sent bodies
    evs = events("hlsjs-status429")
    assert len(evs) == 34
    assert {ev.sn for ev in evs} == set(range(13))


def test_crossorigin_preflights_have_no_body_and_posts_parse() -> None:
    reqs = requests("hlsjs-crossorigin-maxage600")
    assert [r["method"] for r in reqs].count("OPTIONS") == 3
    assert [ev.sn for ev in events("hlsjs-crossorigin-maxage600")] == [0, 2, 1, 3, 4, 5, 6]


# --- bad lines ----------------------------------------------------------------------------


def test_bad_line_between_good_lines_keeps_the_good_ones() -> None:
    bad = GOOD.replace("ts=1795480022515", 'ts="soon"')
    body = f"{GOOD}\n{bad}\n{GOOD}\n"
    parsed = parse(body)
    assert [ev.line for ev in parsed.events] == [1, 3]
    assert parsed.errors == [LineError(2, "ts", "expected an integer")]


WRONG_VALUE = {
    ValueType.INTEGER: ['"12"', "1.5", "?1", "", "tok", "(1)"],
    ValueType.NUMBER: ['"1"', "inf", "?0", ""],
    ValueType.STRING: ["stream", "42", "?1", "", '("x")', '%"x"'],
    ValueType.TOKEN: ['"t"', "1", "?1", "", ":dA==:"],
    ValueType.BOOLEAN: ["1", '"true"', "true"],
    ValueType.INTEGER_LIST: ['("1461")', "(1461 1.5)", "1461.5", '"1461"', ""],
    ValueType.STRING_LIST: ['("a" b)', "err", "4.04", "(4.04)", "?1"],  # integers: dash.js
}
WRONG_CASES = [
    pytest.param(key, raw, id=f"{key}={raw or '(bare)'}")
    for key, spec in KNOWN_KEYS.items()
    for raw in WRONG_VALUE[spec.type]
    if key != "v"
]


@pytest.mark.parametrize(("key", "raw"), WRONG_CASES)
def test_known_key_with_wrong_type_names_the_key(key: str, raw: str) -> None:
    member = f"{key}={raw}" if raw else key
    line = f"e=t,ts=1,{member},x=1" if key not in ("e", "ts") else GOOD + f",{member}"
    err = one_line(line)
    assert isinstance(err, LineError)
    assert err.key == key
    assert err.detail.startswith("expected a")
    assert_matches_reference(line)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        pytest.param('ts=1,sid="x",v=2', "e", id="missing-e"),
        pytest.param('e=t,sid="x",v=2', "ts", id="missing-ts"),
        pytest.param('sid="x"', "e", id="missing-both"),
        pytest.param("com.example-n=1", "e", id="only-custom-keys"),
    ],
)
def test_missing_required_key(line: str, key: str) -> None:
    assert one_line(line) == LineError(1, key, "missing required key")


@pytest.mark.parametrize(
    ("member", "detail"),
    [
        ("v=1", "unsupported CMCD version 1"),
        ("v=3", "unsupported CMCD version 3"),
        ("v=-2", "unsupported CMCD version -2"),
        ('v="2"', "expected an integer"),
        ("v=2.0", "expected an integer"),
    ],
)
def test_version_other_than_2_is_rejected(member: str, detail: str) -> None:
    assert one_line(f"e=t,ts=1,{member}") == LineError(1, "v", detail)


@pytest.mark.parametrize("line", ["e=t,ts=1", "e=t,ts=1,v=2", "e=t,ts=1,v=02"], ids=str)
def test_version_2_or_absent_is_accepted(line: str) -> None:
    assert isinstance(one_line(line), CmcdEvent)


@pytest.mark.parametrize(
    ("line", "key", "detail"),
    [
        ('e=t,ts=1,sid="abc', "sid", "unterminated string at column 14"),
        ('e=t,ts=1,com.x="abc', None, "unterminated string at column 16"),
        ('e=t,ts=1,cid="a\\x"', "cid", "invalid escape in string at column 16"),
        ('e=t,ts=1,cid="a\tb"', "cid", "invalid character in string at column 16"),
        ('e=t,ts=1,cid="café"', "cid", "invalid character in string at column 18"),
        ("e=t,ts=1,", None, "trailing comma at column 9"),
        (",e=t,ts=1", None, "expected a key at column 1"),
        ("e=t,,ts=1", None, "expected a key at column 5"),
        ("e=t,Ts=1", None, "expected a key at column 5"),
        ("e=t,ts=", "ts", "missing value at column 8"),
        ("e=t,ts=1 2", "ts", "expected ',' or end of line at column 10"),
        ("e=t,ts=1 ;x", "ts", "expected ',' or end of line at column 10"),
        ("e=t;ts=1;X", "e", "malformed parameter at column 9"),
        ("e=t,ts=1795480022515000", "ts", "malformed number at column 8"),
        ("e=t,pr=1.2345,ts=1", "pr", "malformed number at column 8"),
        ("e=t,pr=1.,ts=1", "pr", "malformed number at column 8"),
        ("e=t,pr=-,ts=1", "pr", "malformed number at column 8"),
        ("e=t,br=(1461,ts=1", "br", "malformed inner list at column 8"),
        ("e=t,bs=?2,ts=1", "bs", "malformed boolean at column 8"),
        ("e=t\x00,ts=1", "e", "invalid character at column 4"),
        ("\x00\xff\ufffd\x1b[2J", None, "expected a key at column 1"),
        ("e=\x7f,ts=1", "e", "invalid character at column 3"),
        ("e=t\r,ts=1", "e", "invalid character at column 4"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_syntax_error_says_where(line: str, key: str | None, detail: str) -> None:
    assert one_line(line) == LineError(1, key, detail)
    assert_matches_reference(line)


def test_garbage_bytes_become_errors_not_exceptions() -> None:
    garbage = bytes(b for b in range(256) if b != ord("\n")).decode("latin-1")
    body = f"{GOOD}\n{garbage}\n\x00\x00\n{GOOD}\n"
    parsed = parse(body)
    assert [ev.line for ev in parsed.events] == [1, 4]
    assert [(err.line, err.key) for err in parsed.errors] == [(2, None), (3, None)]


def test_overlong_line_is_rejected_the_rest_kept() -> None:
    prefix = 'e=t,ts=1,cid="'
    fits = prefix + "a" * (MAX_LINE_LENGTH - len(prefix) - 1) + '"'
    too_long = prefix + "a" * (MAX_LINE_LENGTH - len(prefix)) + '"'
    parsed = parse(f"{fits}\n{too_long}\r\n{GOOD}\n")
    assert [ev.line for ev in parsed.events] == [1, 3]
    assert parsed.errors == [LineError(2, None, f"line longer than {MAX_LINE_LENGTH} characters")]


@pytest.mark.parametrize("extra", [1, 500], ids=["one-more", "500-more"])
def test_too_many_lines_one_error_for_the_rest(extra: int) -> None:
    parsed = parse(f"{GOOD}\n" * (MAX_LINES + extra))
    assert len(parsed.events) == MAX_LINES
    assert parsed.errors == [
        LineError(MAX_LINES + 1, None, f"too many lines: at most {MAX_LINES} per body are read")
    ]


@pytest.mark.parametrize("tail", ["", "\n", "\n\n  \n"], ids=["no-newline", "newline", "blanks"])
def test_exactly_max_lines_is_fine(tail: str) -> None:
    parsed = parse("\n".join([GOOD] * MAX_LINES) + tail)
    assert (len(parsed.events), parsed.errors) == (MAX_LINES, [])


def test_blank_lines_and_crlf_tolerated_line_numbers_kept() -> None:
    parsed = parse(f"\r\n{GOOD}\r\n\r\n  \n{GOOD}\r\n\n")
    assert parsed.errors == []
    assert [ev.line for ev in parsed.events] == [2, 5]
    assert parsed.events[0] == replace(parse(GOOD).events[0], line=2)


@pytest.mark.parametrize("body", ["", "\n", "\n\n", "\r\n", " \t \n"], ids=repr)
def test_empty_body_has_no_events_and_no_errors(body: str) -> None:
    parsed = parse(body)
    assert parsed.events == []
    assert parsed.errors == []


CANARY_SID = "c4n4ry00-dead-beef-0000-sid000000000"
CANARY_URL = "https://cdn.example/c4n4ry-url/seg.m4s?token=s3cr3t"


@pytest.mark.parametrize(
    "line",
    [
        f"e=t,ts=1,sid={CANARY_SID.replace('-', '')}",  # a token where a string belongs
        f'e=t,ts=1,sid=("{CANARY_SID}")',
        f'e=t,ts=1,sid="{CANARY_SID}',
        f'e=t,ts=1,sid="{CANARY_SID}\\q"',
        f'e=t,ts=1,url="{CANARY_URL}',
        f"e=t,ts=1,url={CANARY_URL[8:]}",
        f"{CANARY_SID.replace('-', '')}=1,e=t,ts=1,",  # a sid-looking key
        f'e=t,ts=1,sid="{CANARY_SID}",v=7',
        f'sid="{CANARY_SID}",url="{CANARY_URL}"',
        f"e=t,ts={CANARY_SID}",
    ],
    ids=lambda s: s[:40],
)
def test_error_details_never_contain_sid_or_url(line: str) -> None:
    err = one_line(line)
    assert isinstance(err, LineError)
    for secret in ("c4n4ry", "s3cr3t", "cdn.example"):
        assert secret not in err.detail
        assert secret not in (err.key or "")


# --- details of the grammar ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "attr", "value"),
    [
        pytest.param('e=t,ts=1,cid="a\\"b\\\\c"', "cid", 'a"b\\c', id="string-escapes"),
        pytest.param('e=t,ts=1,cid=""', "cid", "", id="empty-string"),
        pytest.param("e=t,ts=1,br=(1461;q=1 700);x", "br", 1461, id="inner-list-params"),
        pytest.param("e=t,ts=1,br=( 700  1461 )", "br", 700, id="inner-list-spaces"),
        pytest.param("e=t,ts=1,br=()", "br", None, id="empty-inner-list"),
        pytest.param("e=t,ts=1,br=1461", "br", 1461, id="bare-int-for-list"),
        pytest.param('e=t,ts=1,ec="boom"', "ec", "boom", id="bare-string-for-list"),
        pytest.param('e=t,ts=1,ec=("a" "b")', "ec", "a", id="first-of-string-list"),
        pytest.param("e=e,ts=1,ec=25", "ec", "25", id="dashjs-bare-int-code"),
        pytest.param('e=e,ts=1,ec=(1001 "x")', "ec", "1001", id="int-in-string-list"),
        pytest.param("e=t,ts=-5", "ts", -5, id="negative-int"),
        pytest.param("e=t,ts=1,pr=0.25", "pr", 0.25, id="decimal"),
        pytest.param("e=t,ts=1,pr=2", "pr", 2.0, id="integer-as-number"),
        pytest.param("e=t,ts=1,bs", "bs", True, id="bare-key-true"),
        pytest.param("e=t,ts=1,bs=?0", "bs", False, id="boolean-false"),
        pytest.param("e=t,ts=1,bs;p=1", "bs", True, id="bare-key-with-params"),
        pytest.param("e=*x:/y,ts=1", "e", "*x:/y", id="token-chars"),
        pytest.param("e=t;p=1;q,ts=1;z=:AQID:", "ts", 1, id="params-ignored"),
        pytest.param("e=t,ts=1,ts=2", "ts", 2, id="duplicate-last-wins"),
        pytest.param('e=t,ts="x",ts=2', "ts", 2, id="duplicate-overrides-bad"),
        pytest.param("e=t ,\tts=1", "ts", 1, id="ows-around-comma"),
        pytest.param("   e=t,ts=1 \t", "ts", 1, id="leading-sp-trailing-ows"),
        pytest.param('e=t,ts=1,x=@1700000000,y=%"caf%c3%a9",z=:AQ==:', "e", "t", id="rfc9651"),
    ],
)
def test_grammar_details(line: str, attr: str, value: object) -> None:
    ev = one_line(line)
    assert isinstance(ev, CmcdEvent)
    assert getattr(ev, attr) == value
    assert_matches_reference(line)


# dash.js 5.2.1's error report for a manifest 404, byte for byte (tests/fixtures/cmcd/
# dashjs-fatal-manifest404.jsonl, from tests/snippet/test_e2e.py's fail-dash.js run).
DASHJS_ERROR = (
    'bl=(0;v 0;a),cid="dashjs",e=e,ec=25,sid="3a5c9cb0-15de-496c-a208-d5224af6caa5",'
    "sn=2,sta=s,ts=1796551527288,v=2\n"
)


def test_dashjs_error_report_parses_with_its_code_as_a_string() -> None:
    parsed = parse(DASHJS_ERROR)
    assert parsed.errors == []
    [ev] = parsed.events
    assert (ev.e, ev.ec, ev.sta, ev.sn, ev.bl) == ("e", "25", "s", 2, 0)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("e=e,ts=1,ec=2.5", id="decimal"),
        pytest.param("e=e,ts=1,ec=?1", id="boolean"),
        pytest.param("e=e,ts=1,ec=boom", id="token"),
        pytest.param("e=e,ts=1,ec=(2.5)", id="decimal-in-list"),
    ],
)
def test_an_error_code_is_still_a_string_or_an_integer_only(line: str) -> None:
    err = one_line(line)
    assert isinstance(err, LineError)
    assert err.key == "ec"


def test_known_keys_table_matches_the_event() -> None:
    event_fields = {f.name for f in fields(CmcdEvent)} - {"line"}
    assert set(KNOWN_KEYS) == event_fields | {"v"}
    assert all(spec.meaning for spec in KNOWN_KEYS.values())
    assert {k for k, spec in KNOWN_KEYS.items() if spec.identifying} == {"sid", "url"}
