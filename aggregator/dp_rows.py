"""The noise of a dp account's stats rows: scale and 95 % interval (aggregator/noise.py).

Added to each row of ``GET /v1/stats`` (JSON) as ``noise`` when the account is in dp mode
and the row's day is one dp applied to; rows of k mode are left as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aggregator.noise import DpPolicy, row_noise
from aggregator.store import Store
from collector.accounts import Account

HOUR_PARTS = """
SELECT toStartOfDay(window_start) AS day, stream, breakdown, value, count() AS parts
FROM cells FINAL
WHERE account_id = {account:String}
  AND granularity = 'hour'
  AND window_start >= {start:DateTime('UTC')}
  AND window_start < {end:DateTime('UTC')}
GROUP BY day, stream, breakdown, value
"""


async def add_noise(
    store: Store,
    account: Account,
    granularity: str,
    rows: list[dict[str, Any]],
    by: tuple[str, ...] | list[str],
    start: datetime,
    end: datetime,
) -> None:
    """Add ``noise`` to the rows (in place)."""
    if account.privacy != "dp" or not rows or granularity == "minute":
        return
    policy = DpPolicy(account.epsilon_per_day, account.delta)
    k = max(2, account.k)
    parts: dict[tuple[int, str, str, str], int] = {}
    if granularity == "day":
        found = await store.query_dicts(
            HOUR_PARTS,
            {
                "account": account.account_id,
                "start": start.replace(tzinfo=None),
                "end": end.replace(tzinfo=None),
            },
        )
        for r in found:
            day = r["day"].replace(tzinfo=UTC) if r["day"].tzinfo is None else r["day"]
            parts[(int(day.timestamp()), r["stream"], r["breakdown"], r["value"])] = int(r["parts"])
    for row in rows:
        window = datetime.fromisoformat(str(row["window_start"]).replace("Z", "+00:00"))
        ts = int(window.timestamp())
        if ts - ts % 86_400 < account.privacy_from:
            continue
        breakdown = next((dim for dim in by if dim in row), "")
        value = str(row[breakdown]) if breakdown else ""
        n = parts.get((ts, str(row["stream"]), breakdown, value), 0)
        row["noise"] = row_noise(policy, k, granularity, n)
