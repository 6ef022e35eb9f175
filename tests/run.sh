#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, then runs it:
# system packages (chromium and ffmpeg for the browser tests), a virtualenv with the
# project and its test extras, the npm packages (player snippet, the dashboard's uPlot, the
# browser-test driver with axe-core), lint, types, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)  # deploy check, benchmark baseline
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)  # deploy check (cluster)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "!! ${need[*]} missing and not root: browser tests will fail" >&2
  fi
fi

echo "== python environment"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[embedded,test,bench]'

echo "== player snippet, dashboard chart library and browser-test driver (npm)"
(cd player-snippet && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build && npm test)
# uPlot from npm into aggregator/api/static/vendor/ (committed too, so pip installs need no npm;
# tests/integration/test_dashboard.py checks the committed copy is this build).
(cd aggregator/api/static-vendor && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

echo "== lint and types"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "== tests"
.venv/bin/pytest -q -p no:cacheprovider "$@"
