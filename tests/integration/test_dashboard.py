"""The dashboard at ``/`` in a real headless Chromium (Debian's ``chromium`` driven by
``playwright-core`` from tests/browser/dashboard.mjs): it shows the numbers the API returns,
keeps the token in sessionStorage only, talks to no other origin, works under its CSP; and
the routes ``/`` and ``/static/{path}`` themselves."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import os
import re
import shutil
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from aggregator.api.dashboard import CSP, assets
from aggregator.api.dp_rows import DP_SENTENCE
from aggregator.api.stats import METRICS, RELEASE_SENTENCE
from tests.integration.conftest import Running
from tests.integration.test_dp_mode import dp_day

ROOT = Path(__file__).resolve().parents[2]
BROWSER_DIR = ROOT / "tests" / "browser"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
T = 1795480000000

CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
FIREFOX_WIN = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1"
)
TIZEN_TV = (
    "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "76.0.3809.146/6.0 TV Safari/537.36"
)
PLAYSTATION = (
    "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)"
)
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36 Edg/156.0.0.0"
)
OPERA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36 OPR/120.0.0.0"
)
ANDROID = (
    "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Mobile Safari/537.36"
)


def ev(stream: str, sid: str, sn: int, ms: int, e: str = "ps", **keys: str | int) -> str:
    parts: dict[str, str] = {
        "cid": f'"{stream}"',
        "e": e,
        "sid": f'"{sid}"',
        "sn": str(sn),
        "ts": str(T + ms),
        "v": "2",
    }
    parts.update((k, str(v)) for k, v in keys.items())
    return ",".join(f"{k}={v}" for k, v in sorted(parts.items())) + "\n"


def plays(
    stream: str, sid: str, startup_ms: int, seconds: int, stall_ms: int = 0, **keys: str | int
) -> list[str]:
    """Start, play (optionally with one stall half way), end."""
    lines = [
        ev(stream, sid, 0, 0, sta="s"),
        ev(stream, sid, 1, startup_ms, sta="p", br="(2000)", **keys),
    ]
    at = startup_ms + seconds * 500
    if stall_ms:
        lines += [
            ev(stream, sid, 2, at, sta="r"),
            ev(stream, sid, 3, at + stall_ms, sta="p"),
        ]
    lines.append(ev(stream, sid, 4, startup_ms + seconds * 1000 + stall_ms, sta="e"))
    return lines


def fails(stream: str, sid: str) -> list[str]:
    return [
        ev(stream, sid, 0, 0, sta="s"),
        ev(stream, sid, 1, 300, sta="f"),
        ev(stream, sid, 2, 310, "e", sta="f", ec='("manifestLoadError")'),
    ]


# (ip, user agent, events): DE and US viewers, one each from GB and NL (merged into
# "(other)" with k = 2), and a second stream with two viewers. Two browsers the user agent
# does not name (the family "Other": a Tizen TV and a PlayStation) and one Edge and one Opera
# viewer (each under k, merged into "(other)"): the two must not read alike. Two live viewers
# report their latency. Two viewers fail (one failure alone would not be shown: a sum needs
# k viewers behind it).
VIEWERS: list[tuple[str, str, list[str]]] = [
    ("193.99.144.80", CHROME_LINUX, plays("big-buck-bunny", "v1", 1200, 40)),
    ("85.214.132.117", FIREFOX_WIN, plays("big-buck-bunny", "v2", 900, 30, stall_ms=4000)),
    ("8.8.8.8", IPHONE, plays("big-buck-bunny", "v3", 1500, 20)),
    ("8.8.4.4", CHROME_LINUX, plays("big-buck-bunny", "v4", 700, 50)),
    ("81.2.69.160", ANDROID, plays("big-buck-bunny", "v5", 2500, 10, stall_ms=2000)),
    ("2.16.0.1", FIREFOX_WIN, fails("big-buck-bunny", "v6")),
    ("2.16.0.2", FIREFOX_WIN, fails("big-buck-bunny", "v13")),
    ("1.1.1.1", CHROME_LINUX, plays("sintel", "v7", 1100, 25)),
    ("193.0.0.1", IPHONE, plays("sintel", "v8", 1300, 15)),
    ("193.99.144.81", TIZEN_TV, plays("big-buck-bunny", "v9", 1800, 30, ltc=4000)),
    ("85.214.132.118", PLAYSTATION, plays("big-buck-bunny", "v10", 2200, 30, ltc=6000)),
    ("193.99.144.82", EDGE, plays("big-buck-bunny", "v11", 800, 30)),
    ("85.214.132.119", OPERA, plays("big-buck-bunny", "v12", 1000, 30)),
]


async def play(running: Running, embed_key: str) -> None:
    # All sessions inside one minute, so every granularity holds them in one window.
    if time.time() % 60 > 45:
        await asyncio.sleep(61 - time.time() % 60)
    for ip, ua, events in VIEWERS:
        for line in events:
            assert (await running.post(embed_key, line, ip=ip, ua=ua)).status == 204


def figures(rows: list[dict[str, Any]]) -> dict[str, int]:
    """What the page's tiles show: sums, and the most viewers of one window."""
    per_window: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        per_window[row["window_start"]].append(row)
    return {
        "views": sum(r["views"] for r in rows),
        "failures": sum(r["failures"] for r in rows),
        "unique": max(sum(r["unique_viewers"] for r in w) for w in per_window.values()),
        "concurrent": max(sum(r["concurrent_peak"] for r in w) for w in per_window.values()),
    }


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def hour_floor(text: str) -> str:
    floored = datetime.fromisoformat(text.replace("Z", "+00:00")).replace(
        minute=0, second=0, microsecond=0
    )
    return floored.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def mux_scores(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Mux Data's scores (docs.mux.com, "Startup Time", "Smoothness", "Playback Success")
    applied to the summed cells, written out independently of the page's scores.js."""
    views = sum(r["views"] for r in rows)
    failures = sum(r["failures"] for r in rows)
    exits = sum(r["exits_before_start"] for r in rows)
    rebuffers = sum(r["rebuffer_count"] for r in rows)
    stalled = sum(r["rebuffer_seconds"] for r in rows)
    playing = sum(r["playing_seconds"] for r in rows)
    # The median of one row is the API's own; of several, their view-weighted mean (as the
    # page says with its "≈").
    timed = [r for r in rows if r["startup_ms_p50"] is not None]
    p50 = sum(r["startup_ms_p50"] * max(1, r["views"]) for r in timed) / sum(
        max(1, r["views"]) for r in timed
    )
    exits_only = max(0, exits - failures)
    success = (100 * (views - failures - exits_only) + 50 * exits_only) / views
    startup = 8 / (8 + p50 / 1000) * 100
    by_count = 100 / math.sqrt(1 + (rebuffers / views / 2) ** 2)
    by_ratio = 100 * math.exp(-10 * stalled / (stalled + playing))
    smoothness = (by_count + by_ratio) / 2
    return {
        "success": success,
        "startup": startup,
        "smoothness": smoothness,
        "overall": success * min(startup, smoothness) / 100,
    }


def node_with_playwright() -> str:
    """The node binary, once node, playwright-core and chromium are known to be there."""
    node = shutil.which("node")
    assert node, "node is needed for the browser test"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), (
        "run `npm ci` in tests/browser (tests/run.sh does)"
    )
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    return node


async def drive(
    running: Running,
    token: str,
    empty_token: str,
    screenshot: Path,
    stream: str = "",
    dp: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run tests/browser/dashboard.mjs without blocking the server's event loop. ``dp``
    ({from, to} for the range inputs): only read a dp account's noise margins."""
    node = node_with_playwright()
    options: dict[str, Any] = {
        "url": running.url,
        "token": token,
        "emptyToken": empty_token,
        "screenshot": str(screenshot),
        "stream": stream,
    }
    if dp is not None:
        options["dp"] = dp
    proc = await asyncio.create_subprocess_exec(
        node,
        str(BROWSER_DIR / "dashboard.mjs"),
        json.dumps(options),
        cwd=BROWSER_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, err.decode()[-4000:]
    report: dict[str, Any] = json.loads(out)
    return report


@pytest.mark.browser
async def test_dashboard_shows_the_api_numbers_in_a_real_browser(running: Running) -> None:
    account = await running.create_account("Blender Studio", k=2)
    newcomer = await running.create_account("Newcomer", k=3)
    await play(running, account["embed_key"])
    await running.flush()
    token = account["api_token"]
    now = time.time()
    day = {
        "from": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 86400)),
        "granularity": "auto",
    }
    totals = await running.stats(token, **day)
    countries = await running.stats(token, **day, by="country")
    everything = await running.stats(token, **day, by="country,device,os,browser,player")
    expected = figures(totals["rows"])
    assert expected["views"] == 13  # the data really is there

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    sintel = await running.stats(token, **day, stream="sintel")
    csv_view = await running.http.get(
        running.url + "/v1/stats",
        params={**day, "format": "csv"},
        headers={"Authorization": f"Bearer {token}"},
    )
    api_csv = await csv_view.text()
    report = await drive(running, token, newcomer["api_token"], screenshot, stream="sintel")
    page = report["signedIn"]

    # The wrong token was refused and forgotten.
    assert "not accepted" in report["wrongToken"]["error"]
    assert report["wrongToken"]["signInVisible"]
    assert report["wrongToken"]["sessionStorage"] == {}

    # The page shows the numbers the API returns.
    assert page["dashboardVisible"]
    assert not page["signInVisible"]
    assert page["accountId"] == account["account_id"]
    assert page["k"] == "2"
    # k mode: no noise, so no sentence about it, no margins, no whiskers
    assert not page["dpNoteVisible"]
    assert page["marginsVisible"] == 0
    assert page["chartMargins"] == 0
    tiles = page["tiles"]
    assert tiles["views"]["text"] == str(expected["views"])
    assert tiles["unique"]["text"] == str(expected["unique"])
    assert tiles["concurrent"]["text"] == str(expected["concurrent"])
    assert tiles["failures"]["text"] == str(expected["failures"]) == "2"
    stalled = sum(r["rebuffer_seconds"] for r in totals["rows"])
    playing = sum(r["playing_seconds"] for r in totals["rows"])
    assert float(tiles["rebuffer"]["value"]) == pytest.approx(stalled / (stalled + playing))
    assert tiles["startup"]["text"].endswith(" s")

    # A country row: the same views as the API's rows for that country.
    api_views: dict[str, int] = defaultdict(int)
    for row in countries["rows"]:
        api_views[row["country"]] += row["views"]
    country_rows = page["tables"]["country"]["rows"]
    page_views = {row["value"]: row["cells"][1] for row in country_rows}
    assert api_views["DE"] == 6
    assert page_views["DE"] == "6"
    assert {value: str(n) for value, n in api_views.items()} == page_views
    assert country_rows[0]["cells"][0] == "Germany (DE)"
    assert set(page["tables"]) == {"country", "device", "os", "browser", "player"}

    # The k notice: the hidden viewers per breakdown, as the API counts them.
    assert "k = 2" in page["privacy"]
    for dimension, hidden in everything["hidden"]["by"].items():
        assert page["hidden"][dimension] == str(hidden["viewers_not_in_breakdown"])

    # The stream list, and the charts.
    assert page["streams"] == ["", "big-buck-bunny", "sintel"]
    assert page["chartsVisible"]
    assert_every_metric_and_score(page, totals["rows"])
    assert_honest_labels(page)
    assert_charts_readable(page)
    assert " ".join(page["releaseSentence"].split()) == RELEASE_SENTENCE

    # Accessibility: axe-core finds nothing serious or critical, signed in or empty (its
    # whole answer is kept next to the screenshots).
    (ARTIFACTS / "dashboard-axe.json").write_text(
        json.dumps({"signed_in": report["axe"], "empty_phone": report["axeEmpty"]}, indent=2)
    )
    serious = [
        v for v in report["axe"] + report["axeEmpty"] if v["impact"] in ("serious", "critical")
    ]
    assert serious == []

    # The download of the view is the API's CSV for the same range; the full export too.
    assert_same_csv(report["viewCsv"]["text"], api_csv)
    assert report["exportCsv"]["name"].startswith(f"streamtally-{account['account_id']}-")
    assert "window_start" in report["exportCsv"]["text"].splitlines()[0]

    # Real time: concurrent viewers per minute for the last hour, asked again after 15 s,
    # not while the tab is hidden, at once when it is shown again; the delay is stated.
    realtime = report["realtime"]
    first = realtime["first"]["realtime"]
    assert first["chart"]
    assert first["slots"] == 60
    assert first["state"] == "running"
    assert first["points"] >= 1
    assert "Delay:" in first["delay"]
    assert "min ago" in first["delay"]
    assert first["note"].startswith("From stored minute cells")
    assert realtime["after15s"] == realtime["before"] + 1
    assert realtime["hiddenState"] == "paused"
    assert realtime["hiddenLoads"] == 0
    assert realtime["visibleState"] == "running"
    assert realtime["afterVisible"] == 1

    # Clicking a stream shows that stream only: the API's numbers for it.
    chosen = report["stream"]
    assert chosen["selectedStream"] == "sintel"
    assert chosen["tiles"]["views"]["text"] == str(figures(sintel["rows"])["views"]) == "2"
    assert [row["value"] for row in chosen["streamRows"]] == ["sintel"]

    # On a phone-sized screen the charts fit their cards, axis labels included.
    for chart in report["phone"]["charts"]:
        assert chart["inside"], (chart["id"], chart["rects"])
        assert chart["canvasInside"], (chart["id"], chart["rects"])
        assert chart["scrollWidth"] <= 390  # nothing wider than the screen

    # Compared with the previous (empty) period: every tile says what it was.
    compare = report["compare"]
    assert compare["deltas"]["delta-views"].endswith("vs 0")
    assert all(text for text in compare["deltas"].values())
    # The previous period is as long as the range and ends where the range's first hour
    # starts, so no window is in both.
    asked = [
        parse_qs(u.query)
        for u in map(urlsplit, report["requests"])
        if u.path == "/v1/stats" and "format" not in parse_qs(u.query)
    ]
    spans = {(q["from"][0], q["to"][0]) for q in asked if "by" not in q}
    previous = [
        (start, end)
        for start, end in spans
        for cur_start, cur_end in spans
        if end == hour_floor(cur_start)
        and iso_seconds(end) - iso_seconds(start) == iso_seconds(cur_end) - iso_seconds(cur_start)
    ]
    assert previous, spans

    # The token: in sessionStorage only; no cookie; localStorage empty.
    assert page["sessionStorage"] == {"streamtally.token": token}
    assert page["localStorage"] == {}
    assert page["cookie"] == ""
    assert report["cookies"] == []

    # A reload keeps the session; another range is asked for and drawn per minute.
    assert report["reloaded"]["tiles"]["views"]["text"] == str(expected["views"])
    assert report["lastHour"]["tiles"]["views"]["text"] == str(expected["views"])
    assert report["signedOut"]["signInVisible"]
    assert report["signedOut"]["sessionStorage"] == {}

    # Another account without data: its own k, empty states, nothing of the first account.
    empty = report["empty"]
    assert empty["accountId"] == newcomer["account_id"]
    assert empty["k"] == "3"
    assert empty["emptyVisible"]
    assert "at least 3 viewers" in empty["emptyText"]
    assert empty["tiles"]["views"]["text"] == "0"
    assert empty["streams"] == [""]
    assert not empty["chartsVisible"]
    assert set(empty["tables"]) == {"country", "device", "os", "browser", "player"}
    for table in empty["tables"].values():
        assert table["rows"] == []
        assert table["empty"] == "No data yet — rows appear once at least 3 viewers watched."

    # Only the server was asked for anything; nothing was refused by the CSP; no errors.
    origins = {f"{u.scheme}://{u.netloc}" for u in map(urlsplit, report["requests"])}
    assert origins == {running.url}
    assert report["headers"]["content-security-policy"] == CSP
    assert report["consoleErrors"] == []
    assert report["pageErrors"] == []
    assert screenshot.stat().st_size > 10_000
    for name in ("charts", "realtime", "compare", "phone", "last-hour", "empty-phone"):
        assert (ARTIFACTS / f"dashboard-{name}.png").stat().st_size > 5_000, name


TILE_METRICS = {
    # tile id: the API rows' figure it shows (over one window, as the test's traffic lies)
    "total-views": lambda rows: sum(r["views"] for r in rows),
    "total-failures": lambda rows: sum(r["failures"] for r in rows),
    "total-exits": lambda rows: sum(r["exits_before_start"] for r in rows),
    "total-playing": lambda rows: sum(r["playing_seconds"] for r in rows),
    "total-bitrate-changes": lambda rows: sum(r["bitrate_changes"] for r in rows),
    "total-failure-pct": lambda rows: (
        sum(r["failures"] for r in rows) / sum(r["views"] for r in rows)
    ),
    "total-startup-failure-pct": lambda rows: (
        min(sum(r["failures"] for r in rows), sum(r["exits_before_start"] for r in rows))
        / sum(r["views"] for r in rows)
    ),
}


def assert_every_metric_and_score(page: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Every metric of the API has its tile, with the API's number; the scores are Mux's
    formulas over those numbers, each with its formula as a tooltip."""
    tiles = page["allTiles"]
    for tile_id, pick in TILE_METRICS.items():
        assert float(tiles[tile_id]["value"]) == pytest.approx(pick(rows)), tile_id
    (row,) = [r for r in rows if r["stream"] == "big-buck-bunny"]
    assert float(tiles["total-startup"]["value"]) > 0
    (bitrate,) = {r["bitrate_kbps_avg"] for r in rows}
    assert float(tiles["total-bitrate"]["value"]) == pytest.approx(bitrate)
    assert row["latency_ms_avg"] is not None
    assert float(tiles["total-latency"]["value"]) == pytest.approx(row["latency_ms_avg"], rel=0.01)
    shown = {
        "views",
        "unique_viewers",
        "playing_seconds",
        "startup_ms_p50",
        "startup_ms_p95",
        "rebuffer_count",
        "rebuffer_seconds",
        "rebuffer_ratio",
        "failures",
        "failures_by_code",
        "exits_before_start",
        "concurrent_peak",
        "bitrate_kbps_avg",
        "bitrate_changes",
        "latency_ms_avg",
    }
    assert shown == set(METRICS)  # a new metric must get its place on the page
    codes: dict[str, int] = defaultdict(int)
    for r in rows:
        for code, n in r["failures_by_code"].items():
            codes[code] += n
    assert {c["value"]: c["cells"][1] for c in page["codes"]} == {
        k: str(n) for k, n in codes.items()
    }
    if not codes:
        assert page["codesEmpty"]

    per_stream: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        per_stream[r["stream"]].append(r)
    assert len(page["scores"]) == 4
    for key, value in mux_scores(rows).items():
        assert float(page["scores"][key]["value"]) == pytest.approx(value), key
    for key, score in page["scores"].items():
        assert score["title"] == score["formula"], key
        assert len(score["formula"]) > 30, key
        assert 0 <= float(score["value"]) <= 100, key
    assert (
        "8 ÷ (8 + median startup in seconds) \N{MULTIPLICATION SIGN} 100"
        in page["scores"]["startup"]["title"]
    )
    assert "√(1 + (rebuffers per view ÷ 2)²)" in page["scores"]["smoothness"]["title"]
    assert (
        "e^(\N{MINUS SIGN}10 \N{MULTIPLICATION SIGN} rebuffer ratio)"
        in page["scores"]["smoothness"]["title"]
    )
    # Each stream's score in the streams table: Mux's formulas over that stream's row.
    for stream_row in page["streamRows"]:
        expected = mux_scores(per_stream[stream_row["value"]])["overall"]
        assert stream_row["cells"][-1] == str(round(expected)), stream_row


def assert_honest_labels(page: dict[str, Any]) -> None:
    """The browser family "Other" and the merged small values never read alike."""
    browsers = {row["value"]: row["cells"][0] for row in page["tables"]["browser"]["rows"]}
    assert "Other" in browsers, browsers
    assert "(other)" in browsers, browsers
    assert browsers["Other"].split("a browser")[0] == "Other"
    assert not browsers["(other)"].startswith("Other")
    assert browsers["(other)"].startswith("Merged small values")


def assert_charts_readable(page: dict[str, Any]) -> None:
    """uPlot, not the page's own SVG; one busy minute in a day still draws a mark in a chart
    spanning the whole day; the axes' labels stay inside their card."""
    assert page["uplot"]
    assert not any(src.endswith("svgchart.js") for src in page["scripts"])
    assert len(page["charts"]) == 10
    for chart in page["charts"]:
        assert chart["uplot"], chart["id"]
        assert chart["inside"], chart["id"]
        assert chart["canvasInside"], chart["id"]
        assert chart["slots"] >= 24, chart  # the whole day, one slot per hour
        assert "per hour" in (chart["label"] or ""), chart
    drawn = {chart["id"]: chart["points"] for chart in page["charts"]}
    for chart_id in (
        "chart-views",
        "chart-unique",
        "chart-concurrent",
        "chart-playing",
        "chart-startup",
        "chart-failures",
        "chart-bitrate",
        "chart-scores",
    ):
        assert drawn[chart_id] >= 1, chart_id


def assert_same_csv(downloaded: str, api: str) -> None:
    """The download of the view holds the API's rows (the page asked up to its own now)."""
    ours = list(csv.reader(io.StringIO(downloaded)))
    theirs = list(csv.reader(io.StringIO(api)))
    assert ours[0] == theirs[0]
    assert ours[1:] == theirs[1:]
    assert len(ours) > 1


async def test_page_and_files_are_served_with_a_strict_policy(running: Running) -> None:
    resp = await running.http.get(running.url + "/")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    html = await resp.text()
    # No inline code or style: the policy would refuse it.
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts
    assert all(" src=" in tag for tag in scripts)
    assert "style=" not in html
    assert "<style" not in html
    for path, ctype in [
        ("dashboard.js", "text/javascript; charset=utf-8"),
        ("charts.js", "text/javascript; charset=utf-8"),
        ("scores.js", "text/javascript; charset=utf-8"),
        ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
        ("dashboard.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        resp = await running.http.get(f"{running.url}/static/{path}")
        assert resp.status == 200, path
        assert resp.headers["Content-Type"] == ctype
        assert resp.headers["Content-Security-Policy"] == CSP
        etag = resp.headers["ETag"]
        again = await running.http.get(
            f"{running.url}/static/{path}", headers={"If-None-Match": etag}
        )
        assert again.status == 304


@pytest.mark.parametrize(
    "path",
    [
        "nope.js",
        "../dashboard.py",
        "..%2Fdashboard.py",
        "%2e%2e/app.py",
        "vendor/",
        "x/../../cli.py",
    ],
    ids=["unknown", "dotdot", "encoded-slash", "encoded-dots", "folder", "nested-dotdot"],
)
async def test_nothing_outside_the_static_files_is_served(running: Running, path: str) -> None:
    resp = await running.http.get(f"{running.url}/static/{path}")
    assert resp.status == 404
    assert "def " not in await resp.text()


def test_every_file_the_page_needs_is_packaged() -> None:
    """Every file index.html links and every module the scripts import is one of the served
    files (read through importlib.resources, as from an installed wheel), uPlot included:
    the page loads nothing from elsewhere."""
    served = assets()
    html = served["index.html"].body.decode()
    needed = set(re.findall(r'(?:src|href)="/static/([^"]+)"', html))
    assert {
        "dashboard.js",
        "dashboard.css",
        "vendor/uPlot.iife.min.js",
        "vendor/uPlot.min.css",
    } <= needed
    queue = [name for name in needed if name.endswith(".js")]
    while queue:
        script = served[queue.pop()].body.decode()
        for module in re.findall(r"from '\./([^']+)'", script):
            if module not in needed:
                needed.add(module)
                queue.append(module)
    assert {"charts.js", "scores.js"} <= needed
    assert needed <= set(served), needed - set(served)
    assert "svgchart.js" not in served
    assert "vendor/uPlot.LICENSE.txt" in served


def test_the_bundled_uplot_is_the_pinned_npm_release() -> None:
    """aggregator/api/static/vendor/ holds uPlot exactly as the version pinned in
    aggregator/api/static-vendor/package.json pins it (its build.mjs copies it; tests/run.sh
    rebuilds)."""
    pinned = json.loads(
        (ROOT / "aggregator" / "api" / "static-vendor" / "package.json").read_text()
    )["devDependencies"]
    assert set(pinned) == {"uplot"}
    lock = json.loads(
        (ROOT / "aggregator" / "api" / "static-vendor" / "package-lock.json").read_text()
    )
    assert lock["packages"]["node_modules/uplot"]["version"] == pinned["uplot"]
    vendor = assets()["vendor/uPlot.iife.min.js"].body
    built = (
        ROOT
        / "aggregator"
        / "static-vendor"
        / "node_modules"
        / "uplot"
        / "dist"
        / "uPlot.iife.min.js"
    )
    assert built.is_file(), (
        "run `npm ci && npm run build` in aggregator/api/static-vendor/ (tests/run.sh does)"
    )
    assert vendor == built.read_bytes()
    assert len(vendor) < 60_000  # the minified build, not the 145 kB one


async def test_the_page_and_the_api_explain_longer_windows_in_the_same_sentence(
    running: Running,
) -> None:
    """Why "last 24 hours" can count more than "last hour" (hours pool minutes too small
    to show): one sentence, the same on the dashboard and in the stats API's note."""
    page = await (await running.http.get(running.url + "/")).text()
    assert RELEASE_SENTENCE in " ".join(page.split())
    account = await running.create_account()
    stats = await running.stats(account["api_token"])
    assert RELEASE_SENTENCE in stats["hidden"]["note"]


@pytest.mark.browser
async def test_a_dp_account_sees_each_noisy_number_with_its_margin(running: Running) -> None:
    """A dp account's first dp day in the real browser: the sentence saying what the margins
    mean, "± n" under views, unique viewers, playing time and failures equal to the API's
    ci95 of the one hour row shown, whiskers on those four charts only, and no serious
    axe-core finding. The k account's page shows neither (the main test above)."""
    account, day = await dp_day(running)
    token = account["api_token"]
    span = {
        "from": datetime.fromtimestamp(day, UTC).isoformat(),
        "to": datetime.fromtimestamp(day + 86_400, UTC).isoformat(),
    }
    [row] = (await running.stats(token, granularity="hour", **span))["rows"]
    ARTIFACTS.mkdir(exist_ok=True)
    shown = {
        "from": datetime.fromtimestamp(day, UTC).strftime("%Y-%m-%dT%H:%M"),
        "to": datetime.fromtimestamp(day + 86_400, UTC).strftime("%Y-%m-%dT%H:%M"),
    }
    report = await drive(running, token, "", ARTIFACTS / "dashboard-dp.png", dp=shown)
    assert report["pageErrors"] == []
    assert report["consoleErrors"] == []
    dp = report["dp"]
    assert dp["sentence"] == DP_SENTENCE
    assert dp["sentenceVisible"]
    assert "hour" in dp["subtitle"]
    fields = {
        "views": "views",
        "unique": "unique_viewers",
        "playing": "playing_seconds",
        "failures": "failures",
    }
    for key, field in fields.items():
        margin = dp["margins"][key]
        assert margin["visible"], key
        assert float(margin["value"]) == row["noise"][field]["ci95"], key
        assert margin["text"].startswith("± "), key
        assert float(dp["tiles"][key]) == pytest.approx(row[field]), key
    assert dp["margins"]["views"]["text"] == f"± {row['noise']['views']['ci95']:,.0f}"
    assert dp["otherMargins"] == 4
    whiskered = {box for box, chart in dp["charts"].items() if chart["margins"]}
    assert whiskered == {"chart-views", "chart-unique", "chart-playing", "chart-failures"}
    for box in whiskered:
        assert dp["charts"][box]["margins"] == 1
        assert "95 % margin" in dp["charts"][box]["label"]
    serious = [v for v in report["axeDp"] if v["impact"] in ("serious", "critical")]
    assert serious == []
