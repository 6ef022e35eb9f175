"""The bounded vocabularies a client's words are reduced to: error codes, event types, states.

A player sends its error code (CMCD ``ec``), event type (``e``) and state (``sta``) as
free text; anything a player or a viewer can type is a way to put an identifier into
storage. So each is kept only if it is in the vocabulary of a known player family, and
becomes ``(other)`` otherwise. The vocabularies are data, copied from the players' own
sources (versions named beside each); a newer player's new code reads ``(other)`` until it
is added here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

OTHER: Final = "(other)"


def _spans(*spans: tuple[int, int]) -> frozenset[str]:
    """Decimal strings of the integers in the given inclusive spans."""
    return frozenset(str(n) for low, high in spans for n in range(low, high + 1))


def _prefixed(prefix: str, codes: Iterable[int]) -> frozenset[str]:
    return frozenset(f"{prefix}{n}" for n in codes)


# hls.js 1.7.4, src/errors.ts: every value of the ErrorDetails enum (what hls.js puts in `ec`).
HLSJS_ERROR_DETAILS: Final = frozenset(
    {
        "aborted", "assetListLoadError", "assetListLoadTimeout", "assetListParsingError",
        "attachMediaError", "audioTrackLoadError", "audioTrackLoadTimeOut",
        "bufferAddCodecError", "bufferAppendError", "bufferAppendNoProgress",
        "bufferAppendingError", "bufferFullError", "bufferIncompatibleCodecsError",
        "bufferNudgeOnStall", "bufferSeekOverHole", "bufferStalledError", "fragDecryptError",
        "fragGap", "fragLoadError", "fragLoadTimeOut", "fragParsingError",
        "internalException", "interstitialAssetItemError", "keyLoadError", "keyLoadTimeOut",
        "keySystemDestroyCloseSessionError", "keySystemDestroyMediaKeysError",
        "keySystemDestroyRemoveSessionError", "keySystemLicenseRequestFailed",
        "keySystemNoAccess", "keySystemNoConfiguredLicense", "keySystemNoKeys",
        "keySystemNoSession", "keySystemServerCertificateRequestFailed",
        "keySystemServerCertificateUpdateFailed", "keySystemSessionUpdateFailed",
        "keySystemStatusInternalError", "keySystemStatusOutputRestricted", "levelEmptyError",
        "levelLoadError", "levelLoadTimeOut", "levelParsingError", "levelSwitchError",
        "manifestIncompatibleCodecsError", "manifestLoadError", "manifestLoadTimeOut",
        "manifestParsingError", "mediaSourceRequiresReset", "playlistUnchangedError",
        "remuxAllocError", "subtitleTrackLoadError", "subtitleTrackLoadTimeOut", "unknown",
    }
)  # fmt: skip

# shaka-player 5.2 (main, Aug 2026), lib/util/error.js: every shaka.util.Error.Code, sent as
# its decimal number. The codes fill these spans without gaps.
SHAKA_ERROR_CODES: Final = _spans(
    (1000, 1011), (2000, 2017), (3000, 3025), (4000, 4064), (5000, 5006), (6000, 6020),
    (7000, 7007), (8000, 8007), (9000, 9017), (10000, 10010),
)  # fmt: skip

# HTML MediaError (WHATWG HTML, "media elements"): codes 1-4 and their names; the player
# snippet's trackMedia sends the name, or MEDIA_ERR_UNKNOWN when the element has no error.
MEDIA_ERRORS: Final = frozenset(
    {
        "1", "2", "3", "4",
        "MEDIA_ERR_ABORTED", "MEDIA_ERR_NETWORK", "MEDIA_ERR_DECODE",
        "MEDIA_ERR_SRC_NOT_SUPPORTED", "MEDIA_ERR_UNKNOWN",
    }
)  # fmt: skip

# Video.js 8.23, src/js/media-error.js: MediaError codes 0 (custom) to 5 (encrypted), as the
# snippet's documented `vjs-${player.error().code}` (README.md, docs/player-snippet.md).
VIDEOJS_ERRORS: Final = _prefixed("vjs-", range(6))

# dash.js 5.1, src/core/errors/Errors.js, src/streaming/protection/errors/ProtectionErrors.js
# and src/mss/errors/MssErrors.js: the *_CODE numbers, as the snippet's documented
# `dash-${e.error.code}` (docs/player-snippet.md).
DASHJS_ERRORS: Final = _prefixed(
    "dash-",
    [10, 11, 12, *range(15, 30), *range(31, 37), *range(100, 115), 200, 201],
)

# HTTP status codes (RFC 9110 allows 100-599), as players report a failed request.
HTTP_STATUSES: Final = _spans((100, 599))

ERROR_CODES: Final = (
    HLSJS_ERROR_DETAILS
    | SHAKA_ERROR_CODES
    | MEDIA_ERRORS
    | VIDEOJS_ERRORS
    | DASHJS_ERRORS
    | HTTP_STATUSES
)

# CTA-5004-B (CMCD v2) event types and player states, as in @svta/cml-cmcd 2.4
# (CmcdEventType, CmcdPlayerState), the library hls.js 1.7 uses.
EVENT_TYPES: Final = frozenset(
    {"bc", "ps", "pr", "e", "t", "c", "b", "m", "um", "pe", "pc", "rr",
     "as", "ae", "abs", "abe", "sk", "ce"}
)  # fmt: skip
PLAYER_STATES: Final = frozenset({"s", "p", "k", "r", "a", "w", "e", "f", "q", "d"})


def error_code(code: str, player: str | None = None) -> str:
    """A player's error code if it is in a known player's vocabulary, else ``(other)``.
    dash.js sends its own codes as bare numbers (``ec=25``, CMCD parses it to ``"25"``):
    from ``player`` dash.js they are named as the snippet's dash.js adapter names them
    (``dash-25``), so that both ways of reporting count one code under one name."""
    text = code.strip()
    if player == "dash.js" and text.isdigit() and text.isascii():
        text = f"dash-{text}"
    return text if text in ERROR_CODES else OTHER


def event_type(kind: str) -> str:
    """A CMCD event type from CTA-5004-B, else ``(other)``."""
    return kind if kind in EVENT_TYPES else OTHER


def player_state(state: str | None) -> str | None:
    """A CMCD player state from CTA-5004-B (None stays None), else ``(other)``."""
    if state is None or state in PLAYER_STATES:
        return state
    return OTHER
