"""Fixtures for the player snippet's tests: node with the snippet's npm packages installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SNIPPET = Path(__file__).resolve().parents[2] / "player-snippet"


@pytest.fixture(scope="module")
def node() -> str:
    """node, with the snippet's npm packages installed (npm ci when any is missing)."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    assert node is not None, "node is needed for the player snippet tests"
    packages = ("@hpke/core", "hls.js", "shaka-player", "dashjs", "video.js")
    if not all((SNIPPET / "node_modules" / package).is_dir() for package in packages):
        assert npm is not None, "npm is needed to install the player snippet's packages"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SNIPPET,
            check=True,
            timeout=300,
        )
    return node
