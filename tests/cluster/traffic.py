"""The benchmark's traffic generator, sent to a single ``serve`` and to a cluster at once."""

from __future__ import annotations

import http.client
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.traffic import Request, Traffic, load_templates
from tests.integration.restart_traffic import ADMIN, http_call


def post(url: str, embed_key: str, request: Request) -> int:
    """One report on a new connection; 0 if the connection failed (the player retries)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(
            "POST",
            f"/v1/r/{embed_key}?player={request.player}",
            request.body,
            {
                "Content-Type": "application/cmcd",
                "X-Forwarded-For": request.viewer.ip,
                "User-Agent": request.viewer.user_agent,
            },
        )
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def create_account(url: str, name: str, k: int = 2) -> dict[str, Any]:
    body = json.dumps({"name": name, "origins": ["*"], "k": k}).encode()
    status, raw = http_call("POST", url + "/v1/admin/accounts", body, ADMIN)
    assert status == 201, raw
    account: dict[str, Any] = json.loads(raw)
    return account


def requests(seed: int, sessions: int, events: int) -> list[Request]:
    traffic = Traffic(
        load_templates(),
        concurrent=max(1, sessions // 2),
        seed=seed,
        start_ms=int(time.time() * 1000),
        max_events_per_session=events,
        sessions=sessions,
    )
    return list(traffic)


@dataclass
class Side:
    """Where one copy of the traffic goes: collector URLs and the embed key per account."""

    urls: Sequence[str]
    embed_keys: Sequence[str]
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # account index -> 503s

    def send(self, request: Request, rng: random.Random, alive: Callable[[str], bool]) -> None:
        """To a random collector; on a refusal or a dead one, again (as a player retries)."""
        index = request.session % len(self.embed_keys)
        key = self.embed_keys[index]
        for _ in range(400):  # 20 s of retries
            url = rng.choice([u for u in self.urls if alive(u)])
            status = post(url, key, request)
            if status == 204:
                self.accepted += 1
                return
            assert status in (0, 503), status
            if status == 503:
                self.refused[index] = self.refused.get(index, 0) + 1
            time.sleep(0.05)
        raise AssertionError("a report was never accepted")


def stats(url: str, token: str, granularity: str, by: str = "") -> list[dict[str, Any]]:
    now = time.time()
    iso = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    params = f"granularity={granularity}&from={iso(now - 2 * 86400)}&to={iso(now + 86400)}"
    if by:
        params += f"&by={by}"
    status, raw = http_call(
        "GET", f"{url}/v1/stats?{params}", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200, raw
    rows: list[dict[str, Any]] = json.loads(raw)["rows"]
    return rows


def export(url: str, token: str) -> list[dict[str, Any]]:
    status, raw = http_call(
        "GET", f"{url}/v1/export?format=ndjson", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200, raw
    rows = [json.loads(line) for line in raw.splitlines() if line.strip()]
    rows = [row for row in rows if "manifest" not in row]  # names the account and the time
    for row in rows:
        row.pop("account_id", None)
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


BREAKDOWNS = ("", "country", "device", "os", "browser", "player")


COUNTED_ONCE = ("views", "unique_viewers", "failures", "exits_before_start")


def counted_once(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The numbers that count events and viewers (not the ones that depend on the order in
    which a session's events were processed, like bitrate-seconds)."""
    keys = ("stream", "granularity", "window_start", "breakdown", "value", *COUNTED_ONCE)
    return sorted(tuple(str(row.get(k)) for k in keys) for row in rows)


def assert_same_numbers(expected: tuple[str, str], actual: tuple[str, str]) -> int:
    """Every exported row and every stats row (each granularity, each breakdown) of two
    (url, api token) pairs are equal; the number of stats rows compared."""
    got, want = export(*actual), export(*expected)
    if got != want:
        missing = [r for r in want if r not in got][:5]
        extra = [r for r in got if r not in want][:5]
        raise AssertionError(
            f"exports differ: {len(want)} vs {len(got)} rows; missing {missing}; extra {extra}"
        )
    compared = 0
    for granularity in ("minute", "hour", "day"):
        for by in BREAKDOWNS:
            rows = stats(*expected, granularity, by)
            assert stats(*actual, granularity, by) == rows, (granularity, by)
            compared += len(rows)
    return compared
