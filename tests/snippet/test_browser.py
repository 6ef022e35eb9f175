"""The built snippet in Debian's headless chromium (player-snippet/e2e/run.js, playwright-core).

Phase 1: a stand-in collector inside the harness opens the sealed reports with its private key.
Needs chromium and ffmpeg (tests/run.sh installs them).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.snippet.conftest import SNIPPET

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def built(node: str) -> str:
    """node, with dist/streamtally.min.js and the e2e test stream built."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is needed to build the player snippet"
    assert shutil.which("ffmpeg") is not None, "ffmpeg is needed for the e2e test stream"
    subprocess.run([npm, "run", "--silent", "build"], cwd=SNIPPET, check=True, timeout=120)
    if not (SNIPPET / "e2e" / "stream" / "master.m3u8").exists():
        subprocess.run([str(SNIPPET / "e2e" / "make-stream.sh")], check=True, timeout=120)
    return node


@pytest.mark.parametrize("mode", ["sender", "hlsjs", "video"])
def test_snippet_reports_sealed_from_chromium(built: str, mode: str) -> None:
    done = subprocess.run(
        [built, "e2e/run.js", "--mode", mode, "--seconds", "3"],
        cwd=SNIPPET,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    out = json.loads(done.stdout)
    assert out["reports"], "no reports"
    assert all(r["type"] == "application/vnd.streamtally.sealed" for r in out["reports"])
    player = {"sender": "html5", "hlsjs": "hls.js", "video": "html5"}[mode]
    assert all(r["path"].endswith(f"?player={player}") for r in out["reports"])
