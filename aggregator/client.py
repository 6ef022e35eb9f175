"""The command line's HTTP client for a running server (accounts, export, flush, purge).

Shared by :mod:`aggregator.cli` and the command handlers that live next to their API
(:mod:`aggregator.api.account_api`), so that neither imports the other.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import orjson

from collector.errors import ConfigError, StreamTallyError

__all__ = ["DEFAULT_SERVER", "admin_token", "print_result", "request"]

DEFAULT_SERVER = "http://127.0.0.1:8080"


def request(
    method: str, url: str, token: str | None, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            raw = resp.read()
            return resp.status, orjson.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return err.code, {"detail": raw.decode("utf-8", "replace")}
    except urllib.error.URLError as err:
        raise StreamTallyError(f"cannot reach the server at {url}: {err.reason}") from None


def admin_token(args: argparse.Namespace) -> str:
    token: str | None = args.admin_token or os.environ.get("STREAMTALLY_ADMIN_TOKEN")
    if not token:
        raise ConfigError("admin_token", "needed: --admin-token or STREAMTALLY_ADMIN_TOKEN")
    return token


def print_result(status: int, body: Any) -> int:
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    return 0 if status < 400 else 1
