"""The dashboard at ``/`` in a real headless Chromium (Debian's ``chromium`` driven by
``playwright-core`` from tests/browser/dashboard.mjs): it shows the numbers the API returns,
keeps the token in sessionStorage only, talks to no other origin, works under its CSP; and
the routes ``/`` and ``/static/{path}`` themselves."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from aggregator.dashboard import CSP, assets
from aggregator.stats import RELEASE_SENTENCE
from tests.integration.conftest import Running

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


def plays(stream: str, sid: str, startup_ms: int, seconds: int, stall_ms: int = 0) -> list[str]:
    """Start, play (optionally with one stall half way), end."""
    lines = [ev(stream, sid, 0, 0, sta="s"), ev(stream, sid, 1, startup_ms, sta="p", br="(2000)")]
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


# (ip, user agent, events): two DE and two US viewers, one each from GB and NL (merged into
# "(other)" with k = 2), and a second stream with two viewers.
VIEWERS: list[tuple[str, str, list[str]]] = [
    ("193.99.144.80", CHROME_LINUX, plays("big-buck-bunny", "v1", 1200, 40)),
    ("85.214.132.117", FIREFOX_WIN, plays("big-buck-bunny", "v2", 900, 30, stall_ms=4000)),
    ("8.8.8.8", IPHONE, plays("big-buck-bunny", "v3", 1500, 20)),
    ("8.8.4.4", CHROME_LINUX, plays("big-buck-bunny", "v4", 700, 50)),
    ("81.2.69.160", ANDROID, plays("big-buck-bunny", "v5", 2500, 10, stall_ms=2000)),
    ("2.16.0.1", FIREFOX_WIN, fails("big-buck-bunny", "v6")),
    ("1.1.1.1", CHROME_LINUX, plays("sintel", "v7", 1100, 25)),
    ("193.0.0.1", IPHONE, plays("sintel", "v8", 1300, 15)),
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


def node_with_playwright() -> str:
    """The node binary, once node, playwright-core and chromium are known to be there."""
    node = shutil.which("node")
    assert node, "node is needed for the browser test"
    assert (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(), (
        "run `npm ci` in tests/browser (tests/run.sh does)"
    )
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium"
    return node


async def drive(running: Running, token: str, empty_token: str, screenshot: Path) -> dict[str, Any]:
    """Run tests/browser/dashboard.mjs without blocking the server's event loop."""
    node = node_with_playwright()
    options = {
        "url": running.url,
        "token": token,
        "emptyToken": empty_token,
        "screenshot": str(screenshot),
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        str(BROWSER_DIR / "dashboard.mjs"),
        json.dumps(options),
        cwd=BROWSER_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
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
    assert expected["views"] == 8  # the data really is there

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    report = await drive(running, token, newcomer["api_token"], screenshot)
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
    tiles = page["tiles"]
    assert tiles["views"]["text"] == str(expected["views"])
    assert tiles["unique"]["text"] == str(expected["unique"])
    assert tiles["concurrent"]["text"] == str(expected["concurrent"])
    assert tiles["failures"]["text"] == str(expected["failures"]) == "1"
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
    assert api_views["DE"] == 2
    assert page_views["DE"] == "2"
    assert {value: str(n) for value, n in api_views.items()} == page_views
    assert country_rows[0]["cells"][0] == "Germany (DE)"
    assert set(page["tables"]) == {"country", "device", "os", "browser", "player"}

    # The k notice: the hidden viewers per breakdown, as the API counts them.
    assert "k = 2" in page["privacy"]
    for dimension, hidden in everything["hidden"]["by"].items():
        assert page["hidden"][dimension] == str(hidden["viewers_not_in_breakdown"])

    # The stream list, and six charts with marks in them.
    assert page["streams"] == ["", "big-buck-bunny", "sintel"]
    assert page["chartsVisible"]
    assert len(page["charts"]) == 6
    assert all(chart["svg"] and chart["marks"] > 0 for chart in page["charts"])

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
        ("svgchart.js", "text/javascript; charset=utf-8"),
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
    names = set(assets())
    assert {"index.html", "dashboard.js", "svgchart.js", "dashboard.css", "favicon.svg"} <= names
    html = assets()["index.html"].body.decode()
    for ref in ("/static/dashboard.js", "/static/dashboard.css", "/static/favicon.svg"):
        assert ref in html


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
