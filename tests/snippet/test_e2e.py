"""Every player end to end: Debian's headless chromium plays a real stream (made with ffmpeg,
HLS and DASH) with hls.js, Shaka Player 5, dash.js 5, Video.js or a plain ``<video>``, against
a running ``streamtally serve`` on the ClickHouse fixture; the stats API then shows what was
played. The players come from npm (player-snippet's devDependencies) and are served from the
page's own origin, like the stream: the page loads nothing from elsewhere.

Each scenario (a player and how it reports: through the snippet, sealed, or its own plain
CMCD v2; playing or failing) has its own account (k = 2) and two browser contexts, each
behind its own forward proxy that sets ``X-Forwarded-For`` (the service trusts it from
127.0.0.1): two viewers from two countries, so k is just reached. The page is served from
another origin than the service, so CORS preflights happen for real.
player-snippet/e2e/run.js drives the browser; it needs chromium, ffmpeg and node (tests/run.sh
installs them). The scenarios run three at a time, then one admin flush writes them all.
Where a player does not report what CMCD v2 asks for, the test says what it does instead
(docs/player-snippet.md lists the same).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from tests.chserver import ClickHouseProcess
from tests.integration.serveproc import ServeProcess
from tests.snippet.conftest import SNIPPET

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ADMIN_TOKEN = "e2e-admin-token-0123456789abcdef"
IPS = ("8.8.8.8", "193.0.0.1")  # US and NL: distinct viewers, each alone in its country
STREAM_SECONDS = 8
SEALED = "application/vnd.streamtally.sealed"
PLAIN = "application/cmcd"
RUN_TIMEOUT_S = 75  # one driver run: chromium's start, playing, the last reports, closing
PARALLEL = 3  # driver runs at once (each is one chromium with two contexts)


# ---- what the page needs: chromium, the stream, the bundle, a static origin ----------------


@pytest.fixture(scope="module")
def tools() -> None:
    """Fail (never skip) when the browser tests' system packages are missing."""
    assert os.access(CHROMIUM, os.X_OK), (
        f"Debian's chromium is needed at {CHROMIUM} (apt-get install chromium; tests/run.sh does)"
    )
    assert shutil.which("ffmpeg"), "ffmpeg is needed (apt-get install ffmpeg; tests/run.sh does)"


@pytest.fixture(scope="module")
def stream_dir(tmp_path_factory: pytest.TempPathFactory, tools: None) -> Path:
    """An 8 s two-rendition stream, HLS and DASH, 2 s segments (e2e/make-stream.sh)."""
    out = tmp_path_factory.mktemp("stream")
    subprocess.run(
        ["bash", str(SNIPPET / "e2e" / "make-stream.sh"), str(out), str(STREAM_SECONDS)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (out / "master.m3u8").is_file()
    return out


@pytest.fixture(scope="module")
def bundle(node: str) -> Path:
    """dist/streamtally.min.js, built from the current sources (esbuild: well under a second)."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to build the player snippet"
    subprocess.run([npm, "run", "--silent", "build"], cwd=SNIPPET, check=True, timeout=120)
    return SNIPPET / "dist" / "streamtally.min.js"


# The players' npm packages (player-snippet/package.json devDependencies): the page loads their
# dist/ files from the page's own origin.
PLAYER_PACKAGES = ("hls.js", "shaka-player", "dashjs", "video.js")


class _Site(SimpleHTTPRequestHandler):
    """/ -> e2e/page.html; /dist/, each player's /node_modules/…/dist/ and /stream/."""

    extensions_map = {
        **SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".m3u8": "application/vnd.apple.mpegurl",
        ".ts": "video/mp2t",
        ".mpd": "application/dash+xml",
        ".m4s": "video/iso.segment",
    }

    def __init__(self, *args: Any, mounts: dict[str, Path], **kwargs: Any) -> None:
        self.mounts = mounts
        super().__init__(*args, **kwargs)

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path == "/":
            return str(SNIPPET / "e2e" / "page.html")
        for prefix, folder in self.mounts.items():
            if path.startswith(prefix):
                target = (folder / path[len(prefix) :]).resolve()
                if target.is_relative_to(folder.resolve()):
                    return str(target)
        return str(SNIPPET / "e2e" / "no-such-file")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(stream_dir: Path, bundle: Path) -> Iterator[str]:
    """The page's origin: a static server on 127.0.0.1 (another origin than the service)."""
    mounts = {
        "/dist/": bundle.parent,
        **{
            f"/node_modules/{package}/dist/": SNIPPET / "node_modules" / package / "dist"
            for package in PLAYER_PACKAGES
        },
        "/stream/": stream_dir,
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Site, mounts=mounts))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---- the service ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, clickhouse_server: ClickHouseProcess
) -> Iterator[ServeProcess]:
    """`streamtally serve` on a fresh database of the session's ClickHouse server."""
    database = f"e2e_{uuid.uuid4().hex[:12]}"
    client = clickhouse_connect.get_client(host=clickhouse_server.host, port=clickhouse_server.port)
    client.command(f"CREATE DATABASE {database}")
    serve = ServeProcess(
        tmp_path_factory.mktemp("serve") / "data",
        "--trusted-proxies", "127.0.0.1/32", "--admin-token", ADMIN_TOKEN,
        "--clickhouse-url", clickhouse_server.url, "--database", database,
        "--flush-seconds", "3600",  # the test flushes
    )  # fmt: skip
    serve.start()
    try:
        yield serve
    finally:
        code = serve.stop()
        client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        client.close()
        assert code == 0, "".join(serve.output[-30:])


def call(
    serve: ServeProcess, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


def new_account(serve: ServeProcess, origin: str) -> dict[str, Any]:
    status, account = call(
        serve,
        "POST",
        "/v1/admin/accounts",
        ADMIN_TOKEN,
        {"name": f"e2e-{uuid.uuid4().hex[:6]}", "origins": [origin], "k": 2},
    )
    assert status == 201, account
    return dict(account)


# ---- the scenarios: all played at once, then one flush ---------------------------------------


@dataclass
class Run:
    """One scenario: its account, and what each browser context saw (or why there is none)."""

    mode: str
    account: dict[str, Any]
    contexts: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


STREAM = "/stream/master.m3u8"
MISSING = "/stream/no-such-stream.m3u8"
DASH = "/stream/manifest.mpd"
MISSING_DASH = "/stream/no-such-stream.mpd"
MISSING_MP4 = "/stream/no-such-video.mp4"
SCENARIOS = {  # name: (page mode, stream); page modes: player-snippet/e2e/page.html
    "play-hls.js": ("hlsjs", STREAM),
    "play-plain-video": ("video", STREAM),  # <video src=master.m3u8>: chromium's own HLS
    "play-shaka": ("shaka", DASH),  # the minified build, what shaka-player serves by default
    "play-shaka-debug": ("shaka-debug", DASH),  # Shaka's debug build: it sends play states
    "play-shaka-plain": ("shaka-plain", DASH),
    "play-dash.js": ("dashjs", DASH),
    "play-dash.js-adapter": ("dashjs-adapter", DASH),  # trackMedia on dash.js's <video>
    "play-video.js": ("videojs", STREAM),
    "fail-hls.js": ("hlsjs", MISSING),
    "fail-plain-video": ("video", MISSING),
    "fail-shaka": ("shaka", MISSING_DASH),
    "fail-shaka-plain": ("shaka-plain", MISSING_DASH),
    "fail-dash.js": ("dashjs", MISSING_DASH),
    "fail-dash.js-adapter": ("dashjs-adapter", MISSING_DASH),
    # Not a missing HLS manifest: for that, Video.js 8 (VHS) reports vjs-2 or vjs-4, by timing.
    "fail-video.js": ("videojs", MISSING_MP4),
    # Batching (player-snippet/src/batch.js): the snippet's default (several events per
    # report, at most every 5 s) against one report per task, sealed and plain, and a page
    # closed mid-batch (its events held for 600 s: only the page's leaving sends them).
    "play-hls.js-unbatched": ("hlsjs", STREAM),
    "play-hls.js-plain": ("hlsjs", STREAM),
    "close-hls.js": ("hlsjs", STREAM),
    "close-hls.js-plain": ("hlsjs", STREAM),
}
CLOSE_AFTER_S = 4  # the close- scenarios: the page closes once this much has played
EXTRA_ARGS = {  # more driver arguments (player-snippet/e2e/run.js) for some scenarios
    "play-hls.js-unbatched": ["--param", "flush=0"],
    "play-hls.js-plain": ["--param", "seal=never"],
    "close-hls.js": ["--param", "flush=600", "--close-after", str(CLOSE_AFTER_S)],
    "close-hls.js-plain": [
        "--param", "flush=600", "--param", "seal=never", "--close-after", str(CLOSE_AFTER_S),
    ],
}  # fmt: skip
UNSEALED = {"play-hls.js-plain", "close-hls.js-plain"}  # the snippet with seal: 'never'
# page mode: (the `player` the report URL names, whether the snippet seals the reports)
MODES = {
    "hlsjs": ("hls.js", True),
    "video": ("html5", True),
    "shaka": ("shaka", True),
    "shaka-debug": ("shaka", True),
    "shaka-plain": ("shaka", False),  # Shaka's own CMCD v2 event mode, no snippet
    "dashjs": ("dash.js", False),  # dash.js's own CMCD v2 event mode, no snippet
    "dashjs-adapter": ("dash.js", True),
    "videojs": ("video.js", True),
}


def driver_args(
    node: str, site: str, serve: ServeProcess, run: Run, src: str, name: str
) -> list[str]:
    args = [
        node, "e2e/run.js", "--page", f"{site}/", "--collector", serve.url,
        "--key", run.account["embed_key"], "--src", src, "--mode", run.mode, "--cid", run.mode,
        "--chromium", CHROMIUM, "--timeout", "30",
    ]  # fmt: skip
    for ip in IPS:
        args += ["--ip", ip]
    return args + EXTRA_ARGS.get(name, [])


@pytest.fixture(scope="module")
def runs(
    node: str, site: str, service: ServeProcess, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Run]:
    """Every scenario played to its end (or fatal error) in chromium, then one admin flush.

    At most ``PARALLEL`` drivers (each its own chromium) play at once: with all twelve at
    once on two cores, the service went unanswered for 20 s at a time and the reports piled
    up in the browsers; with four, playing time drifted by 4 s from what was played. One
    flush for all: a second admin flush within the same wall-clock minute as the first does
    not publish what arrived between the two (aggregator ``close_now``)."""
    out = tmp_path_factory.mktemp("driver")
    runs = {name: Run(mode, new_account(service, site)) for name, (mode, _) in SCENARIOS.items()}
    waiting = list(SCENARIOS)
    playing: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    while waiting or playing:
        while waiting and len(playing) < PARALLEL:
            name = waiting.pop(0)
            src = SCENARIOS[name][1]
            stdout, err = (out / f"{name}.out").open("wb"), (out / f"{name}.err").open("wb")
            with stdout, err:
                proc = subprocess.Popen(
                    driver_args(node, site, service, runs[name], src, name),
                    cwd=SNIPPET, stdout=stdout, stderr=err,
                )  # fmt: skip
            playing[name] = (proc, time.monotonic() + RUN_TIMEOUT_S)
        time.sleep(0.2)
        for name, (proc, deadline) in list(playing.items()):
            code = proc.poll()
            if code is None and time.monotonic() < deadline:
                continue
            if code is None:
                proc.kill()
                proc.wait()
            del playing[name]
            stderr = (out / f"{name}.err").read_text(errors="replace")[-3000:]
            if code != 0:
                runs[name].problem = f"driver exit {code} (None: timed out):\n{stderr}"
            else:
                runs[name].contexts = json.loads((out / f"{name}.out").read_bytes())["contexts"]
    status, flushed = call(service, "POST", "/v1/admin/flush", ADMIN_TOKEN)
    assert status == 200, flushed
    return runs


def contexts_of(runs: dict[str, Run], name: str) -> list[dict[str, Any]]:
    run = runs[name]
    assert run.problem is None, run.problem
    assert [c["ip"] for c in run.contexts] == list(IPS)
    return run.contexts


def stats(serve: ServeProcess, run: Run, query: str) -> dict[str, Any]:
    status, body = call(serve, "GET", f"/v1/stats?{query}", run.account["api_token"])
    assert status == 200, body
    return dict(body)


def total(body: dict[str, Any], metric: str) -> float:
    return float(sum(row[metric] or 0 for row in body["rows"]))


# ---- the browser side ----------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_page_sets_no_cookie_and_stores_nothing(runs: dict[str, Run], name: str) -> None:
    for context in contexts_of(runs, name):
        assert context["cookies"] == []
        assert context["storage"] == {"local": 0, "session": 0, "cookie": "", "indexedDB": []}


@pytest.mark.parametrize("name", SCENARIOS)
def test_reports_are_sealed_preflighted_and_accepted(
    runs: dict[str, Run], site: str, name: str
) -> None:
    """Every request to the service succeeded: keys, the browser's own CORS preflight, and
    reports (204), with no cookie and no referer; sealed through the snippet, plain CMCD v2
    (``application/cmcd``, which is not CORS-safelisted, so preflighted too) without it."""
    run = runs[name]
    player, sealed = MODES[run.mode]
    sealed = sealed and name not in UNSEALED
    report_path = f"/v1/r/{run.account['embed_key']}?player={player}"
    for context in contexts_of(runs, name):
        seen = context["reports"]
        # A page closed mid-batch sends its reports as it goes: the wire has them, not the page.
        assert seen or name.startswith("close-"), f"the page sent nothing: {context['errors']}"
        # The page's own view: no request failed (CORS, network). A request still open when
        # the page closed has no outcome here ("closed"); the wire below has its answer.
        # Playwright may miss a response event on a busy machine, so the statuses are
        # checked on the wire, and every report the page sent must have reached it.
        failed = [r for r in seen if r["failure"] and not r.get("closed")]
        assert failed == [], (failed, context["errors"])
        sent = [r for r in seen if r["method"] == "POST" and not r.get("closed")]
        assert len([w for w in context["wire"] if w["method"] == "POST"]) >= len(sent)
        wire = context["wire"]
        expected = {("OPTIONS", report_path), ("POST", report_path)}
        assert {(w["method"], w["path"]) for w in wire} == (
            expected | {("GET", "/v1/keys")} if sealed else expected
        )
        for w in wire:
            assert w["headers"].get("origin") == site
            assert "cookie" not in w["headers"], w
            if sealed:  # the snippet sends no referer at all
                assert "referer" not in w["headers"], w
            else:  # the browser's default policy: the origin only, as Origin says anyway
                assert w["headers"].get("referer", f"{site}/") == f"{site}/", w
            if w["method"] == "OPTIONS":
                assert w["status"] == 204
                assert w["headers"]["access-control-request-method"] == "POST"
            if w["method"] == "POST":
                assert w["headers"]["content-type"] == (SEALED if sealed else PLAIN)
                assert w["status"] == 204, w


# ---- the service side: what the stats API shows ----------------------------------------------


# Shaka's minified build sends no play states (``ps``), only ``t`` every interval: the
# collector counts playing time from those, so less than was played (12 s of 16 here).
PLAYING_FLOOR = {"play-shaka": 0.5, "play-shaka-plain": 0.5}


@pytest.mark.parametrize("name", [name for name in SCENARIOS if name.startswith("play-")])
def test_two_viewers_playing_show_up_in_the_stats(
    runs: dict[str, Run], service: ServeProcess, name: str
) -> None:
    contexts = contexts_of(runs, name)
    for context in contexts:
        assert not context["outcome"].get("timedOut"), (context["outcome"], context["errors"])
        assert context["outcome"]["error"] is None, context["errors"]
        # dash.js sometimes stops paused on the last frame, without 'ended' (page.html)
        assert context["outcome"]["ended"] or name.startswith("play-dash.js"), context["outcome"]
        assert context["outcome"]["atEnd"] is True
    played = sum(c["outcome"]["currentTime"] for c in contexts)
    assert played >= 2 * (STREAM_SECONDS - 0.5)

    body = stats(service, runs[name], "granularity=day")
    assert {row["stream"] for row in body["rows"]} == {runs[name].mode}
    assert total(body, "views") == 2
    assert max(row["unique_viewers"] for row in body["rows"]) == 2
    # Counted by the wall clock between reports: at most the time from the first frame to
    # the end (longer than the media on a busy machine), plus one report interval's slack.
    wall = sum(c["outcome"]["wallSeconds"] for c in contexts)
    floor = PLAYING_FLOOR.get(name, 0.8) * played
    assert floor <= total(body, "playing_seconds") <= max(played, wall) + 4
    assert all(row["startup_ms_p50"] and row["startup_ms_p50"] > 0 for row in body["rows"])
    assert total(body, "failures") == 0
    assert total(body, "exits_before_start") == 0

    # one viewer per country: neither country reaches k alone, together they are "(other)"
    by_country = stats(service, runs[name], "granularity=day&by=country&metrics=views")
    assert {(row["country"], row["views"]) for row in by_country["rows"]} == {("(other)", 2)}


@pytest.mark.parametrize(
    ("name", "code"),
    [
        pytest.param("fail-hls.js", "manifestLoadError", id="hls.js-manifest-404"),
        pytest.param("fail-plain-video", "MEDIA_ERR_SRC_NOT_SUPPORTED", id="plain-video-404"),
        pytest.param("fail-video.js", "vjs-4", id="video.js-mp4-404"),
        pytest.param("fail-shaka", "1001", id="shaka-manifest-404"),  # through shakaError
        pytest.param("fail-dash.js-adapter", "dash-25", id="dash.js-adapter-manifest-404"),
        pytest.param("fail-dash.js", "dash-25", id="dash.js-plain-manifest-404"),
    ],
)
def test_two_viewers_failing_count_as_failures(
    runs: dict[str, Run], service: ServeProcess, name: str, code: str
) -> None:
    for context in contexts_of(runs, name):
        assert context["outcome"]["error"], context["outcome"]
        assert context["outcome"]["currentTime"] == 0

    body = stats(service, runs[name], "granularity=day")
    assert total(body, "views") == 2
    assert total(body, "failures") == 2
    assert total(body, "exits_before_start") == 2
    assert total(body, "playing_seconds") == 0
    assert [row["failures_by_code"] for row in body["rows"]] == [{code: 2}]


def test_shaka_by_itself_does_not_report_a_failed_load(
    runs: dict[str, Run], service: ServeProcess
) -> None:
    """Shaka 5.2 rejects ``player.load()`` (error 1001, BAD_HTTP_STATUS) without telling its
    CMCD reporter: one ``t`` event with no state goes out, and no ``sta=f`` or ``e``. The
    collector cannot count such a playback (docs/player-snippet.md says so); the snippet's
    ``shakaError`` does (fail-shaka above)."""
    name = "fail-shaka-plain"
    for context in contexts_of(runs, name):
        assert context["outcome"]["error"] == "shaka 1001", context["outcome"]
        plain = [w["body"] for w in context["wire"] if w["method"] == "POST"]
        assert plain, "Shaka sent nothing"
        assert all("sta=" not in line and "e=e" not in line for line in plain), plain

    body = stats(service, runs[name], "granularity=day")
    assert total(body, "views") == 0
    assert total(body, "failures") == 0


def test_dashjs_by_itself_reports_its_failure_with_a_bare_number(
    runs: dict[str, Run], service: ServeProcess
) -> None:
    """dash.js 5.2 sends its error code as a bare number (``ec=25``, where CMCD v2 has a
    list of strings) in an ``e`` event, with no fatal state (``sta`` stays ``s``). The
    collector takes the number as dash.js's code (``dash-25``, the name the snippet's
    adapter uses) and the error event as the failure: counted as such above."""
    for context in contexts_of(runs, "fail-dash.js"):
        assert context["outcome"]["error"] == "dash-25", context["outcome"]
        posts = [w for w in context["wire"] if w["method"] == "POST"]
        errors = [w for w in posts if ",e=e," in w["body"]]
        assert errors, posts
        for w in errors:
            assert "ec=25," in w["body"], w
            assert "sta=f" not in w["body"], w
        assert {w["status"] for w in posts} == {204}


# ---- batching: several events per report, nothing lost -------------------------------------


def posts(context: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in context["wire"] if w["method"] == "POST"]


def wire_events(context: dict[str, Any]) -> set[tuple[str, int]]:
    """(sid, sn) of every CMCD line of a context's plain reports, as they went over the wire."""
    seen = set()
    for w in posts(context):
        for line in w["body"].splitlines():
            sid = re.search(r'(?:^|,)sid="([^"]*)"', line)
            sn = re.search(r"(?:^|,)sn=(\d+)", line)
            assert sid, line
            assert sn, line
            seen.add((sid[1], int(sn[1])))
    return seen


COUNTS = ("views", "failures", "exits_before_start")


@pytest.mark.parametrize("batched", ["play-hls.js", "play-hls.js-plain"])
def test_a_batched_playback_counts_as_an_unbatched_one_with_fewer_reports(
    runs: dict[str, Run], service: ServeProcess, batched: str
) -> None:
    """The snippet's default batch (sealed, and plain) against one report per task: the
    same views, viewers, failures and exits, the same playing time but for how long each
    played, and fewer reports (each an HPKE open at the collector when sealed)."""
    unbatched = "play-hls.js-unbatched"
    got = {name: stats(service, runs[name], "granularity=day") for name in (batched, unbatched)}
    for metric in COUNTS:
        assert total(got[batched], metric) == total(got[unbatched], metric), metric
    viewers = {name: max(r["unique_viewers"] for r in got[name]["rows"]) for name in got}
    assert viewers[batched] == viewers[unbatched] == 2
    # Playing time is counted by the client's clock, so each run's is set against the wall
    # time its pages played (first frame to end): on a busy machine the media time falls
    # behind that (a run measured 1.29x its currentTime while its pair measured 1.01x).
    played = {n: sum(c["outcome"]["wallSeconds"] for c in contexts_of(runs, n)) for n in got}
    ratio = {name: total(got[name], "playing_seconds") / played[name] for name in got}
    assert abs(ratio[batched] - ratio[unbatched]) <= 0.15, ratio
    reports = {name: sum(len(posts(c)) for c in contexts_of(runs, name)) for name in got}
    handed = {name: sum(c["handed"] for c in contexts_of(runs, name)) for name in got}
    assert reports[batched] < reports[unbatched], (reports, handed)
    assert handed[batched] >= 2 * reports[batched], (reports, handed)  # events per report


def test_batched_plain_reports_carry_every_event_hls_js_handed_over(runs: dict[str, Run]) -> None:
    for context in contexts_of(runs, "play-hls.js-plain"):
        events = wire_events(context)
        assert len({sid for sid, _ in events}) == 1
        assert sorted(sn for _, sn in events) == list(range(context["handed"]))
        assert len(posts(context)) < len(events)


@pytest.mark.parametrize("name", ["close-hls.js", "close-hls.js-plain"])
def test_a_page_closed_mid_batch_still_delivers_its_queued_events(
    runs: dict[str, Run], service: ServeProcess, name: str
) -> None:
    """The snippet holds every event (flushInterval 600 s) until the page is closed after
    CLOSE_AFTER_S s of playing: leaving the page sends the whole batch, in one report with
    keepalive (sealed: the seal finishes while the page goes), and the collector counts it."""
    for context in contexts_of(runs, name):
        assert context["outcome"]["closedAt"] >= CLOSE_AFTER_S, context["outcome"]
        sent = posts(context)
        assert [w["status"] for w in sent] == [204], sent  # one report, sent on leaving
        if name in UNSEALED:
            assert sorted(sn for _, sn in wire_events(context))[: context["handed"]] == list(
                range(context["handed"])
            )
        assert context["handed"] >= 4  # s, p, bitrate, t …: a batch, not one event
    body = stats(service, runs[name], "granularity=day")
    assert total(body, "views") == 2
    assert max(row["unique_viewers"] for row in body["rows"]) == 2
    assert total(body, "exits_before_start") == 0
    assert total(body, "failures") == 0
    # t every 2 s (page.html): at least the played time up to the last t before closing
    assert total(body, "playing_seconds") >= 2 * (CLOSE_AFTER_S - 2.5)
    assert all(row["startup_ms_p50"] and row["startup_ms_p50"] > 0 for row in body["rows"])
