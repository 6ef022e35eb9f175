"""The noise of a dp account's stats rows: scale and 95 % interval (aggregator/release/noise.py).

Added to each row of ``GET /v1/stats`` (JSON) as ``noise`` when the account is in dp mode
and the row's day is one dp applied to; rows of k mode are left as they are. The same
numbers go into the stats CSV and the export as flat columns (``views_noise_scale``,
``views_ci95``, ...): present only for dp accounts, empty (CSV) or null (ndjson, parquet)
in rows without noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from aggregator.release.noise import SHOWN, DpPolicy, row_noise
from aggregator.storage.store import Store
from collector.accounts import Account

# What the margins mean, in one sentence: shown by the dashboard above a dp account's numbers
# (aggregator/api/static/index.html; tests/integration/test_dashboard.py checks they agree).
DP_SENTENCE: Final = (
    "Numbers are noisy on purpose: the true value lies within ± the shown margin 95 times in 100."
)

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


# ---- the same numbers as flat columns: the stats CSV and the export ------------------------

# The noisy metrics (aggregator/release/noise.py SHOWN), in the order their columns follow
# the rows'.
NOISY: Final[tuple[str, ...]] = tuple(SHOWN)
# Most hour rows one day row's interval is looked up for in the export (24 hours, each
# possibly written by more than one process run); more than this counts as this many.
MAX_HOUR_PARTS: Final = 96


def noise_columns(metrics: Sequence[str] = NOISY) -> list[str]:
    """The flat columns of the noisy ones of ``metrics``: ``<metric>_noise_scale`` and
    ``<metric>_ci95`` each."""
    return [
        f"{metric}_{what}"
        for metric in NOISY
        if metric in metrics
        for what in ("noise_scale", "ci95")
    ]


def flatten(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's ``noise`` (from :func:`add_noise`) as flat columns (none: no noise)."""
    noise = row.get("noise") or {}
    out: dict[str, Any] = {}
    for metric, values in noise.items():
        out[f"{metric}_noise_scale"] = values["scale"]
        out[f"{metric}_ci95"] = values["ci95"]
    return out


def noise_descriptions() -> dict[str, str]:
    """What each noise column holds (the export manifest's schema)."""
    out: dict[str, str] = {}
    for metric in NOISY:
        out[f"{metric}_noise_scale"] = (
            f"dp mode: scale of the discrete Laplace noise on {metric} (empty/null in rows "
            "without noise: minute rows and days before dp applied)"
        )
        out[f"{metric}_ci95"] = (
            f"dp mode: half-width of the 95 % interval of {metric}: the true value lies within "
            f"{metric} ± this in 95 % of rows (empty/null in rows without noise)"
        )
    return out


def export_noise(account: Account, select: str) -> tuple[str, dict[str, Any]]:
    """The export query ``select`` (one row per key, with ``_runs``: the rows it adds up)
    with the noise columns of a dp account added, and the query's parameters for them.

    The numbers are the ones :func:`add_noise` gives the stats API (computed here in
    Python by :func:`aggregator.release.noise.row_noise` and passed in as parameters, so they are
    the same floats): an hour row's interval is fixed; a day row's depends on how many
    hour rows its day has, counted over the export's own rows."""
    policy = DpPolicy(account.epsilon_per_day, account.delta)
    k = max(2, account.k)
    hour = row_noise(policy, k, "hour")
    days = [row_noise(policy, k, "day", n) for n in range(MAX_HOUR_PARTS + 1)]
    params: dict[str, Any] = {"dp_from": account.privacy_from}
    noisy = "granularity != 'minute' AND toUInt32(toStartOfDay(window_start)) >= {dp_from:UInt32}"
    columns = []
    for metric in NOISY:
        params[f"h_{metric}_scale"] = hour[metric]["scale"]
        params[f"h_{metric}_ci95"] = hour[metric]["ci95"]
        params[f"d_{metric}_scale"] = days[0][metric]["scale"]
        params[f"d_{metric}_ci95"] = [d[metric]["ci95"] for d in days]
        columns.append(
            f"if({noisy}, if(granularity = 'hour', {{h_{metric}_scale:Float64}}, "
            f"{{d_{metric}_scale:Float64}}), NULL) AS {metric}_noise_scale"
        )
        columns.append(
            f"if({noisy}, if(granularity = 'hour', {{h_{metric}_ci95:Float64}}, "
            f"arrayElement({{d_{metric}_ci95:Array(Float64)}}, "
            f"least(_hour_parts, {MAX_HOUR_PARTS}) + 1)), NULL) AS {metric}_ci95"
        )
    sql = (
        "SELECT * EXCEPT (_runs, _hour_parts), "
        + ", ".join(columns)
        + " FROM (SELECT *, sumIf(_runs, granularity = 'hour') OVER (PARTITION BY "
        "toStartOfDay(window_start), stream, breakdown, value) AS _hour_parts FROM ("
        + select
        + "))"
    )
    return sql, params
