"""CMCD v2 event-mode bodies (CTA-5004-B) parsed into ``CmcdEvent``s.

A body is ``Content-Type: application/cmcd``: one event per line, each line an RFC 8941
(RFC 9651) structured-field Dictionary. ``http_sf`` parses a line in ~30 us; this module
parses the same grammar with one compiled regular expression (validation and splitting
into members in one C pass, linear time) and converts only the keys in ``KNOWN_KEYS``:
~5 us for a typical 160-character line. Parameters are parsed and ignored; byte
sequences, dates and display strings are checked against the grammar but never decoded
(no known key has those types, so their content is never looked at).

Rules: blank lines are skipped, CRLF is tolerated, a bad line becomes a ``LineError`` and
the good lines are kept; ``e`` and ``ts`` are required, ``v`` if present must be 2; at most
``MAX_LINES`` lines of at most ``MAX_LINE_LENGTH`` characters. Error details name the
line, key and column, never a value: a ``sid`` or ``url`` must not reach a log line or a
problem body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final, NamedTuple, TypeVar

__all__ = [
    "KNOWN_KEYS",
    "MAX_LINES",
    "MAX_LINE_LENGTH",
    "CmcdEvent",
    "KeySpec",
    "LineError",
    "Parsed",
    "ValueType",
    "parse",
]

MAX_LINES: Final = 1000
MAX_LINE_LENGTH: Final = 8192  # characters; a CMCD line from a real player is ~250
SUPPORTED_VERSION: Final = 2


class ValueType(StrEnum):
    """The structured-field type a known key must carry."""

    INTEGER = "integer"
    NUMBER = "decimal or integer"
    STRING = "string"
    TOKEN = "token"
    BOOLEAN = "boolean"
    INTEGER_LIST = "inner list of integers (first entry used) or integer"
    STRING_LIST = (
        "inner list of strings (first entry used) or string; an integer (dash.js sends its "
        "error codes so) is taken as its decimal string"
    )


class KeySpec(NamedTuple):
    """What StreamTally reads from one CMCD key; the data register is generated from it."""

    type: ValueType
    meaning: str
    identifying: bool = False  # could single out a person: never logged, stored or echoed


_T = ValueType

KNOWN_KEYS: Final[Mapping[str, KeySpec]] = MappingProxyType(
    {
        "v": KeySpec(_T.INTEGER, "CMCD version; reports must be version 2"),
        "e": KeySpec(
            _T.TOKEN, "event type (t, ps, rr, bc, pr, e, ce, m, um, ...): what is counted"
        ),
        "ts": KeySpec(_T.INTEGER, "client clock in ms: durations inside one session only"),
        "sid": KeySpec(
            _T.STRING,
            "playback session id: turned into an opaque session handle, then dropped",
            identifying=True,
        ),
        "cid": KeySpec(_T.STRING, "content id: the stream the statistics are kept for"),
        "sn": KeySpec(_T.INTEGER, "sequence number per target: counts re-sent events once"),
        "sta": KeySpec(_T.TOKEN, "player state (s, p, a, k, r, e, f, ...): startup, rebuffering"),
        "br": KeySpec(_T.INTEGER_LIST, "encoded bitrate in kbps: average and weighted bitrate"),
        "bl": KeySpec(_T.INTEGER_LIST, "buffer length in ms: rebuffering analysis"),
        "mtp": KeySpec(_T.INTEGER_LIST, "measured throughput in kbps: network quality"),
        "msd": KeySpec(_T.INTEGER, "media start delay in ms: video startup time"),
        "ltc": KeySpec(_T.INTEGER, "live latency in ms: live latency statistics"),
        "pt": KeySpec(_T.INTEGER, "playhead time in ms: playing time"),
        "pr": KeySpec(_T.NUMBER, "playback rate (1 = real time): playing time"),
        "ec": KeySpec(_T.STRING_LIST, "player error code: playback failures by error code"),
        "rc": KeySpec(_T.INTEGER, "HTTP response code of a media request (rr): delivery errors"),
        "ttfb": KeySpec(_T.INTEGER, "time to first byte in ms (rr): delivery performance"),
        "ttlb": KeySpec(_T.INTEGER, "time to last byte in ms (rr): delivery performance"),
        "url": KeySpec(
            _T.STRING,
            "media request URL (rr): only its host, for accounts that opt in to CDN stats",
            identifying=True,
        ),
        "sf": KeySpec(_T.TOKEN, "streaming format (h HLS, d DASH, s Smooth, o other)"),
        "st": KeySpec(_T.TOKEN, "stream type (v VOD, l live)"),
        "ot": KeySpec(_T.TOKEN, "object type of a media request (v, a, av, i, m, ...)"),
        "bs": KeySpec(_T.BOOLEAN, "buffer starvation since the last report: rebuffering"),
    }
)


@dataclass(slots=True)
class CmcdEvent:
    """One event line of a report, with the known keys converted (None when absent)."""

    line: int  # 1-based line number in the body
    e: str  # event type (token)
    ts: int  # client clock, ms
    sid: str | None = None
    cid: str | None = None
    sn: int | None = None
    sta: str | None = None
    br: int | None = None  # first entry of inner list (or bare int)
    bl: int | None = None
    msd: int | None = None
    ltc: int | None = None
    pt: int | None = None
    pr: float | None = None
    ec: str | None = None  # first entry of inner list
    rc: int | None = None
    ttfb: int | None = None
    url: str | None = None
    ttlb: int | None = None
    mtp: int | None = None  # first entry of inner list
    sf: str | None = None
    st: str | None = None
    ot: str | None = None
    bs: bool | None = None


@dataclass(frozen=True, slots=True)
class LineError:
    """Why one line was rejected. ``detail`` never contains a value from the line."""

    line: int
    key: str | None  # the key that is wrong, or None for a syntax error not tied to a key
    detail: str


@dataclass(slots=True)
class Parsed:
    events: list[CmcdEvent]
    errors: list[LineError]


# --- grammar (RFC 9651 section 3, as regular expressions) -----------------------------

_KEY = r"[a-z*][a-z0-9_.*-]*+"
_BARE = (
    r'(?:"[ !#-\[\]-~]*+(?:\\["\\][ !#-\[\]-~]*+)*+"'  # string: printable ASCII, \" and \\
    r"|[A-Za-z*][!#$%&'*+.^_`|~0-9A-Za-z:/-]*+"  # token
    r"|-?(?:[0-9]{1,12}+\.[0-9]{1,3}+|[0-9]{1,15}+)"  # decimal, integer
    r"|\?[01]"  # boolean
    r"|:[A-Za-z0-9+/=]*+:"  # byte sequence
    r"|@-?[0-9]{1,15}+"  # date
    r'|%"(?:[ !#$&-~]|%[0-9a-f]{2})*+")'  # display string
)
_PARAMS = rf"(?:;[ ]*+{_KEY}(?:={_BARE})?+)*+"
_ITEM = rf"{_BARE}{_PARAMS}"
_INNER = rf"\([ ]*+(?:{_ITEM}(?:[ ]++{_ITEM})*+[ ]*+)?\)"
# One member per match: (key, raw value without parameters; "" for a bare key = true),
# followed by a separating comma or the end of the line, so matches are contiguous from
# the start. Where no member fits, the last alternative swallows the rest of the line and
# yields ("", ""): the line is malformed. One pass, never retried, linear time.
_MEMBERS: Final = re.compile(
    rf"({_KEY})(?:=({_BARE}|{_INNER}))?+{_PARAMS}(?:[ \t]*+,[ \t]*+(?!\Z)|\Z)|[\s\S]+"
)
_INNER_ITEMS: Final = re.compile(rf"({_BARE}){_PARAMS}")
_UNESCAPE: Final = re.compile(r"\\(.)")

# Pieces for locating a syntax error (slow path, only for bad lines).
_KEY_RE: Final = re.compile(_KEY)
_VALUE_RE: Final = re.compile(rf"{_INNER}|{_BARE}")
_PARAMS_RE: Final = re.compile(_PARAMS)
_SEP_RE: Final = re.compile(r"[ \t]*,[ \t]*")
_STRING_BODY_RE: Final = re.compile(r'[ !#-\[\]-~]*+(?:\\["\\][ !#-\[\]-~]*+)*+')
_OWS_RE: Final = re.compile(r"[ \t]*")

_INT, _NUM, _STR, _TOK, _BOOL, _INT_LIST, _STR_LIST = range(7)
_CODE: Final = {
    _T.INTEGER: _INT,
    _T.NUMBER: _NUM,
    _T.STRING: _STR,
    _T.TOKEN: _TOK,
    _T.BOOLEAN: _BOOL,
    _T.INTEGER_LIST: _INT_LIST,
    _T.STRING_LIST: _STR_LIST,
}
# Keys converted onto CmcdEvent ("v" is only checked), with their type code.
_FIELDS: Final[dict[str, int]] = {k: _CODE[s.type] for k, s in KNOWN_KEYS.items() if k != "v"}
_EXPECTED: Final = {code: f"expected a {t.value}" for t, code in _CODE.items()}
_EXPECTED[_INT] = "expected an integer"
_EXPECTED[_INT_LIST] = "expected an inner list of integers or an integer"
_EXPECTED[_STR_LIST] = "expected an inner list of strings or a string (or integers)"
_NUMBER_START: Final = frozenset("-0123456789")
_NUMBER_TAIL: Final = frozenset("0123456789.")


_V = TypeVar("_V")


class _WrongType(Exception):
    """A known key carries a value of the wrong type (internal)."""


def parse(body: str) -> Parsed:
    """Parse a CMCD v2 event-mode body: one ``CmcdEvent`` per good line, one ``LineError``
    per bad line (blank lines are skipped; at most ``MAX_LINES`` lines are read)."""
    events: list[CmcdEvent] = []
    errors: list[LineError] = []
    lines = body.split("\n", MAX_LINES)
    if len(lines) > MAX_LINES:
        rest = lines.pop()
        if rest.strip(" \t\r\n"):
            errors_rest = LineError(
                MAX_LINES + 1, None, f"too many lines: at most {MAX_LINES} per body are read"
            )
        else:
            errors_rest = None
    else:
        errors_rest = None
    for number, line in enumerate(lines, 1):
        if not line:
            continue  # the empty string after a body's final newline: a blank line
        outcome = _parse_line(number, line)
        if outcome is None:
            continue
        if type(outcome) is CmcdEvent:
            events.append(outcome)
        else:
            errors.append(outcome)  # type: ignore[arg-type]
    if errors_rest is not None:
        errors.append(errors_rest)
    return Parsed(events, errors)


def _parse_line(number: int, line: str) -> CmcdEvent | LineError | None:
    """One line -> an event, an error, or None for a blank line."""
    if line.endswith("\r"):
        line = line[:-1]
    if len(line) > MAX_LINE_LENGTH:
        return LineError(number, None, f"line longer than {MAX_LINE_LENGTH} characters")
    text = line.lstrip(" ").rstrip(" \t")  # RFC 9651 4.2: leading SP, trailing OWS
    if not text:
        return None
    members = dict(_MEMBERS.findall(text))
    if "" in members:
        key, detail = _locate_syntax_error(text, len(line) - len(text))
        return LineError(number, key, detail)

    raw_v = members.get("v")
    if raw_v is not None and raw_v != "2":
        try:
            version = _to_int(raw_v)
        except _WrongType:
            return LineError(number, "v", _EXPECTED[_INT])
        if version != SUPPORTED_VERSION:
            return LineError(number, "v", f"unsupported CMCD version {version}")
    if "e" not in members:
        return LineError(number, "e", "missing required key")
    if "ts" not in members:
        return LineError(number, "ts", "missing required key")

    values: dict[str, object] = {}
    fields = _FIELDS
    for key, raw in members.items():
        code = fields.get(key)
        if code is None:
            continue
        if code == _INT:
            try:  # the grammar lets only -?[0-9]{1,15} through int(); other types raise
                values[key] = int(raw)
            except ValueError:
                return LineError(number, key, _EXPECTED[code])
        elif code == _STR:
            if raw[:1] != '"':
                return LineError(number, key, _EXPECTED[code])
            values[key] = _UNESCAPE.sub(r"\1", raw[1:-1]) if "\\" in raw else raw[1:-1]
        elif code == _TOK:
            if not raw or not (raw[0].isalpha() or raw[0] == "*"):
                return LineError(number, key, _EXPECTED[code])
            values[key] = raw
        elif code == _INT_LIST and raw[1:-1].isdigit() and raw[:1] == "(":
            values[key] = int(raw[1:-1])  # the usual "(1461)"; ASCII digits, the grammar saw to it
        else:
            try:
                values[key] = _convert_other(code, raw)
            except _WrongType:
                return LineError(number, key, _EXPECTED[code])
    return CmcdEvent(number, **values)  # type: ignore[arg-type]


def _convert_other(code: int, raw: str) -> object:
    """Inner lists, decimals and booleans (the rarer types)."""
    if code == _INT_LIST:
        if raw[:1] != "(":
            return _to_int(raw)
        return _first(raw[1:-1], _to_int)
    if code == _STR_LIST:
        if raw[:1] != "(":
            return _to_code(raw)
        return _first(raw[1:-1], _to_code)
    if code == _NUM:
        if raw[:1] not in _NUMBER_START:
            raise _WrongType
        return float(raw)
    # _BOOL: a bare key is true
    if raw == "" or raw == "?1":
        return True
    if raw == "?0":
        return False
    raise _WrongType


def _to_int(raw: str) -> int:
    try:  # the grammar lets only -?[0-9]{1,15} through int(); other types raise
        return int(raw)
    except ValueError:
        raise _WrongType from None


def _to_str(raw: str) -> str:
    if raw[:1] != '"':
        raise _WrongType
    text = raw[1:-1]
    if "\\" in text:
        text = _UNESCAPE.sub(r"\1", text)
    return text


def _to_code(raw: str) -> str:
    """A string, or an integer as its decimal string: CMCD v2 makes ``ec`` strings, dash.js
    5 sends its error codes as bare integers (``ec=25``). What the code may be is decided
    later, against the players' vocabularies (``collector/vocab.py``)."""
    if raw[:1] == '"':
        return _to_str(raw)
    return str(_to_int(raw))


def _first(inner: str, convert: Callable[[str], _V]) -> _V | None:
    """First entry of an inner list's content; every entry must have the type."""
    items = _INNER_ITEMS.findall(inner)
    if not items:
        return None
    first = convert(items[0])
    for item in items[1:]:
        convert(item)
    return first


def _locate_syntax_error(text: str, offset: int) -> tuple[str | None, str]:
    """Walk a malformed line member by member to say where and why it fails.

    Returns (key, detail): key only if it is a known key (an unknown "key" could be any
    text, even a session id); columns are 1-based in the original line."""
    end = len(text)

    def col(pos: int) -> int:
        return offset + pos + 1

    pos = 0
    while True:
        m = _KEY_RE.match(text, pos)
        if m is None:
            if pos == end:
                return None, f"trailing comma at column {col(pos - 1)}"
            return None, f"expected a key at column {col(pos)}"
        key = m.group() if m.group() in KNOWN_KEYS else None
        pos = m.end()
        if pos < end and text[pos] == "=":
            pos += 1
            m = _VALUE_RE.match(text, pos)
            if m is None:
                return key, _describe_bad_value(text, pos, col)
            if text[pos] in _NUMBER_START and text[m.end() : m.end() + 1] in _NUMBER_TAIL:
                return key, f"malformed number at column {col(pos)}"  # too long, or "1."
            pos = m.end()
        pos = _PARAMS_RE.match(text, pos).end()  # type: ignore[union-attr]  # matches ""
        if pos < end and text[pos] == ";":
            return key, f"malformed parameter at column {col(pos)}"
        m = _SEP_RE.match(text, pos)
        if m is None:
            pos = _OWS_RE.match(text, pos).end()  # type: ignore[union-attr]  # matches ""
            if pos == end:  # cannot happen: the fast path accepted what this accepts
                return key, "malformed line"
            if _is_bad_char(text[pos]):
                return key, f"invalid character at column {col(pos)}"
            return key, f"expected ',' or end of line at column {col(pos)}"
        pos = m.end()


def _describe_bad_value(text: str, pos: int, col: Callable[[int], int]) -> str:
    """Why no value starts at ``pos`` (just after ``=``)."""
    if pos >= len(text):
        return f"missing value at column {col(pos)}"
    first = text[pos]
    if first == '"':
        j = _STRING_BODY_RE.match(text, pos + 1).end()  # type: ignore[union-attr]  # matches ""
        if j == len(text):
            return f"unterminated string at column {col(pos)}"
        if text[j] == "\\":
            return f"invalid escape in string at column {col(j)}"
        return f"invalid character in string at column {col(j)}"
    if first == "(":
        return f"malformed inner list at column {col(pos)}"
    if first in _NUMBER_START:
        return f"malformed number at column {col(pos)}"
    if first == "?":
        return f"malformed boolean at column {col(pos)}"
    if first == ":":
        return f"malformed byte sequence at column {col(pos)}"
    if first == "%":
        return f"malformed display string at column {col(pos)}"
    if _is_bad_char(first):
        return f"invalid character at column {col(pos)}"
    return f"invalid value at column {col(pos)}"


def _is_bad_char(ch: str) -> bool:
    return not " " <= ch <= "~"
