"""collector/cmcd.py under hypothesis: never raises, agrees with http_sf on generated
structured-field dictionaries, and yields at most one outcome per line."""

from __future__ import annotations

import base64
import string
from datetime import UTC, datetime
from typing import Any

import http_sf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collector.cmcd import KNOWN_KEYS, MAX_LINES, LineError, ValueType, parse
from tests.collector.test_cmcd import SYNTAX, assert_matches_reference, expected_outcome

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- serialised RFC 9651 pieces, with the optional whitespace varied -------------------


def _word(first: str, rest: str, max_size: int) -> st.SearchStrategy[str]:
    return st.builds(
        str.__add__, st.sampled_from(first), st.text(st.sampled_from(rest), max_size=max_size)
    )


LCALPHA = string.ascii_lowercase
keys = _word(LCALPHA + "*", LCALPHA + string.digits + "_-.*", 6)
custom_keys = _word(LCALPHA, LCALPHA, 5).map(lambda s: "com.example-" + s)
tokens = _word(
    string.ascii_letters + "*", string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~:/", 8
)
integers = st.integers(-999_999_999_999_999, 999_999_999_999_999).map(str)
decimals = st.builds(
    lambda sign, whole, frac: f"{sign}{whole}.{frac}",
    st.sampled_from(["", "-"]),
    st.integers(0, 999_999_999_999),
    st.text(st.sampled_from(string.digits), min_size=1, max_size=3),
)
printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
strings = st.text(printable, max_size=20).map(
    lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
booleans = st.sampled_from(["?0", "?1"])
byte_seqs = st.binary(max_size=12).map(lambda b: ":" + base64.b64encode(b).decode() + ":")
dates = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
).map(lambda d: "@" + str(int(d.replace(tzinfo=UTC).timestamp())))


def _display(text: str) -> str:
    out: list[str] = []
    for ch in text:
        if ch in '%"' or not " " <= ch <= "~":
            out.extend(f"%{b:02x}" for b in ch.encode())
        else:
            out.append(ch)
    return '%"' + "".join(out) + '"'


display_strings = st.text(max_size=8).map(_display)
bare_items = st.one_of(
    integers, decimals, strings, tokens, booleans, byte_seqs, dates, display_strings
)
spaces = st.sampled_from(["", " ", "  "])


@st.composite
def parameters(draw: st.DrawFn) -> str:
    out = ""
    for _ in range(draw(st.integers(0, 2))):
        out += ";" + draw(spaces) + draw(keys)
        if draw(st.booleans()):
            out += "=" + draw(bare_items)
    return out


@st.composite
def inner_lists(draw: st.DrawFn, items: st.SearchStrategy[str] = bare_items) -> str:
    parts = [draw(items) + draw(parameters()) for _ in range(draw(st.integers(0, 3)))]
    sep = draw(st.sampled_from([" ", "  "]))
    return "(" + draw(spaces) + sep.join(parts) + draw(spaces) + ")" + draw(parameters())


# values of the right type for each known key, so that most lines become events
RIGHT_VALUE: dict[ValueType, st.SearchStrategy[str]] = {
    ValueType.INTEGER: integers,
    ValueType.NUMBER: st.one_of(integers, decimals),
    ValueType.STRING: strings,
    ValueType.TOKEN: tokens,
    ValueType.BOOLEAN: booleans,
    ValueType.INTEGER_LIST: st.one_of(inner_lists(integers), integers),
    ValueType.STRING_LIST: st.one_of(inner_lists(strings), strings),
}
any_value = st.one_of(
    bare_items.flatmap(lambda v: parameters().map(lambda p: v + p)), inner_lists()
)


@st.composite
def members(draw: st.DrawFn, key: str) -> str:
    spec = KNOWN_KEYS.get(key)
    if spec is not None and key == "v":
        value = draw(st.sampled_from(["2", "2", "2", "1", "3", '"2"']))
    elif spec is not None and draw(st.integers(0, 9)) > 0:
        value = draw(RIGHT_VALUE[spec.type]) + draw(parameters())
    else:
        if draw(st.integers(0, 4)) == 0:
            return key + draw(parameters())  # bare key: boolean true
        value = draw(any_value)
    return f"{key}={value}"


@st.composite
def dictionaries(draw: st.DrawFn) -> str:
    names = draw(
        st.lists(st.one_of(st.sampled_from(sorted(KNOWN_KEYS)), custom_keys, keys), max_size=10)
    )
    for required in ("e", "ts"):
        if draw(st.integers(0, 9)) > 0:
            names.append(required)
    names = draw(st.permutations(names or ["e"]))
    line = ""
    for i, name in enumerate(names):
        if i:
            line += draw(st.sampled_from([",", ", ", " ,", ",\t", " , "]))
        line += draw(members(name))
    return draw(spaces) + line + draw(st.sampled_from(["", " ", "\t"]))


# --- properties -----------------------------------------------------------------------


def _line_count(body: str) -> int:
    return body.count("\n") + 1


def _check_shape(body: str) -> None:
    parsed = parse(body)
    lines = _line_count(body)
    assert len(parsed.events) + len(parsed.errors) <= min(lines, MAX_LINES + 1)
    for err in parsed.errors:
        assert isinstance(err, LineError)
        assert 1 <= err.line <= min(lines, MAX_LINES + 1)
    numbers = [ev.line for ev in parsed.events] + [err.line for err in parsed.errors]
    assert len(set(numbers)) == len(numbers)  # at most one outcome per line


@FAST
@given(st.text(max_size=300))
@example("\n" * 5)
@example('e=t,ts=1,sid="\\')
@example("e=(" * 50)
def test_random_text_never_raises(body: str) -> None:
    _check_shape(body)


SF_ALPHABET = string.ascii_letters + string.digits + ' \t\r\n,;=()"\\?:@%*-./_!#$&^`|~+'


@FAST
@given(st.text(st.sampled_from(SF_ALPHABET), max_size=80))
def test_structured_field_shaped_text_never_raises(body: str) -> None:
    _check_shape(body)


@settings(FAST, max_examples=100)
@given(st.lists(st.one_of(dictionaries(), st.text(max_size=40)), max_size=4))
def test_mixed_bodies_one_outcome_per_nonblank_line(lines: list[str]) -> None:
    lines = [line.replace("\n", " ") for line in lines]
    body = "\n".join(lines) + "\n"
    parsed = parse(body)
    # blank: nothing but SP/HTAB once a CRLF's CR is gone
    nonblank = sum(1 for line in lines if line.removesuffix("\r").strip(" \t"))
    assert len(parsed.events) + len(parsed.errors) == nonblank


@FAST
@given(dictionaries())
@example('e=t,ts=1,br=(1461;a=%"%c3%a9" 2),x=:AQ==:;y=@0')
def test_generated_dictionaries_agree_with_http_sf(line: str) -> None:
    assert_matches_reference(line)


def _http_sf_leniency(line: str) -> bool:
    """Lines http_sf rejects only because it decodes what StreamTally never reads: base64 of
    byte sequences, UTF-8 of display strings, dates as calendar dates."""
    try:
        http_sf.parse(line.encode(), tltype="dictionary")
    except http_sf.StructuredFieldError as exc:
        reason = str(exc)
        return any(
            leniency in reason
            for leniency in ("Binary Sequence failed to decode", "Invalid UTF-8", "Date value out")
        )
    return False


@settings(FAST, max_examples=1000)
@given(st.text(st.sampled_from(SF_ALPHABET.replace("\n", "")), min_size=1, max_size=40))
@example("e=t,ts=1,a=:AB:")
def test_accepts_exactly_what_http_sf_accepts(line: str) -> None:
    line = line.removesuffix("\r")  # CRLF line ends are tolerated on purpose
    expected: Any = expected_outcome(line)
    if expected is SYNTAX and _http_sf_leniency(line):
        return
    if line.strip(" \t") == "":
        assert parse(line).errors == []  # blank lines are skipped, not parsed
        return
    assert_matches_reference(line)
