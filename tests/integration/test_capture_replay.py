"""The real players' captures through the real server into the real ClickHouse: the numbers
a person counts by reading each file (worked out in
tests/aggregator/counting/test_fixture_replay.py),
read back from GET /v1/stats. Each capture is played by two viewers (two client IPs, the
second with its own sid) so that its cells reach k = 2 and are written."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.captures import CMCD_CAPTURES
from tests.integration.conftest import Running

FIXTURES = CMCD_CAPTURES

# name -> (views, playing seconds, rebuffers, rebuffer seconds, failures, exits before start)
# for ONE playback; the test plays each twice.
EXPECTED: dict[str, tuple[int, float | None, int, float, int, int]] = {
    "hlsjs-main": (1, 31.120, 2, 8.121, 0, 0),
    "hlsjs-fatal-manifest404": (1, 0.0, 0, 0.0, 1, 1),
    "shaka-main": (1, 58.845, 0, 0.0, 0, 0),
    "shaka-main-debug": (1, None, 3, 18.787, 0, 0),
    "hlsjs-status429": (1, None, 0, 0.0, 0, 0),
    # dash.js 5.2.1 with no snippet: its error code a bare number, its failure an e event
    "dashjs-main": (1, 7.990, 0, 0.0, 0, 0),
    "dashjs-fatal-manifest404": (1, 0.0, 0, 0.0, 1, 1),
}
STREAMS = {"dashjs-main": "dashjs", "dashjs-fatal-manifest404": "dashjs"}  # else stream-42
CODES = {
    "hlsjs-fatal-manifest404": {"manifestLoadError": 2},
    "dashjs-fatal-manifest404": {"dash-25": 2},
}


async def replay(running: Running, embed_key: str, name: str, ip: str, suffix: str) -> None:
    for raw in (FIXTURES / f"{name}.jsonl").read_text().splitlines():
        request: dict[str, Any] = json.loads(raw)
        if request["method"] != "POST" or not request.get("body"):
            continue
        headers = {k.lower(): v for k, v in request["headers"].items()}
        body = request["body"].replace('sid="', f'sid="{suffix}')
        player = parse_qs(urlsplit(request["path"]).query).get("player", ["hls.js"])[0]
        resp = await running.post(
            embed_key, body, ctype=headers["content-type"], ua=headers["user-agent"], ip=ip,
            player=player,
        )  # fmt: skip
        assert resp.status == 204, await resp.text()


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=lambda n: n)
async def test_a_capture_gives_what_a_person_counts(running: Running, name: str) -> None:
    account = await running.create_account(origins=("*",), k=2)
    await replay(running, account["embed_key"], name, "8.8.8.8", "a-")
    await replay(running, account["embed_key"], name, "193.0.0.1", "b-")
    await running.flush()
    rows = (await running.stats(account["api_token"], granularity="day"))["rows"]
    [row] = [r for r in rows if r["stream"] == STREAMS.get(name, "stream-42")]
    views, playing, rebuffers, rebuffer_s, failures, exits = EXPECTED[name]
    assert row["views"] == 2 * views
    assert row["unique_viewers"] == 2
    if playing is not None:
        assert row["playing_seconds"] == pytest.approx(2 * playing, abs=0.002)
    else:
        assert row["playing_seconds"] > 0
    assert row["rebuffer_count"] == 2 * rebuffers
    assert row["rebuffer_seconds"] == pytest.approx(2 * rebuffer_s, abs=0.002)
    assert row["failures"] == 2 * failures
    assert row["exits_before_start"] == 2 * exits
    if name in CODES:
        [with_codes] = (
            await running.stats(account["api_token"], granularity="day", metrics="failures_by_code")
        )["rows"]
        assert with_codes["failures_by_code"] == CODES[name]
    if name in ("hlsjs-main", "shaka-main"):
        assert row["startup_ms_p50"] > 0
