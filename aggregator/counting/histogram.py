"""Video startup time as a fixed log-bucket histogram (stored as ``Array(UInt32)`` counts).

40 buckets: bucket 0 holds startups below 50 ms, buckets 1..38 split 50 ms .. 60 s into
38 log-spaced buckets (each ~20.5 % wider than the one before), bucket 39 holds 60 s and
more. Histograms of cells add up bucket by bucket (``sumForEach`` in ClickHouse), so p50
and p95 of any sum of cells come from :func:`startup_quantile`, interpolating inside the
bucket the quantile falls into (geometrically, as the buckets are log-spaced): the error
is at most half a bucket, ~10 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

__all__ = ["BUCKETS", "EDGES_MS", "MAX_MS", "MIN_MS", "bucket_of", "startup_quantile"]

MIN_MS: Final = 50.0
MAX_MS: Final = 60_000.0
BUCKETS: Final = 40
_LOG_STEPS: Final = BUCKETS - 2  # log-spaced buckets between MIN_MS and MAX_MS
_LOG_RATIO: Final = math.log(MAX_MS / MIN_MS) / _LOG_STEPS
# EDGES_MS[i] is the lower edge of bucket i + 1; bucket 0 is [0, 50), bucket 39 [60000, inf).
EDGES_MS: Final[tuple[float, ...]] = tuple(
    MIN_MS * math.exp(_LOG_RATIO * i) for i in range(_LOG_STEPS + 1)
)


def bucket_of(ms: float) -> int:
    """The bucket a startup time of ``ms`` milliseconds falls into."""
    if ms < MIN_MS:
        return 0
    if ms >= MAX_MS:
        return BUCKETS - 1
    i = int(math.log(ms / MIN_MS) / _LOG_RATIO) + 1
    # guard against rounding at an edge
    if i > 1 and ms < EDGES_MS[i - 1]:
        i -= 1
    elif i < BUCKETS - 1 and ms >= EDGES_MS[i]:
        i += 1
    return min(i, BUCKETS - 1)


def startup_quantile(hist: Sequence[int], q: float) -> float:
    """The ``q``-quantile (0..1) in ms of a startup histogram; NaN when it is empty.

    Within the bucket holding the quantile the value is interpolated: linearly in bucket 0
    (0..50 ms), geometrically in the log buckets; the open top bucket answers 60 000 ms.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be between 0 and 1")
    total = sum(hist)
    if total <= 0:
        return math.nan
    target = q * total
    seen = 0
    for i, count in enumerate(hist):
        if count <= 0:
            continue
        if seen + count >= target:
            fraction = (target - seen) / count
            if i == 0:
                return MIN_MS * fraction
            if i >= BUCKETS - 1:
                return MAX_MS
            low = EDGES_MS[i - 1]
            return low * math.exp(_LOG_RATIO * fraction)
        seen += count
    return MAX_MS  # only reached through float rounding of target
