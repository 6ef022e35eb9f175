-- k-anonymous aggregate cells: one row per (account, stream, granularity, window, breakdown,
-- value) and process run (`part`). Only cells with >= k distinct viewers are ever written
-- (aggregator/kanon.py); no viewer key, IP, user agent or session id has a column here.
-- A group (account, granularity, window) is rewritten with a higher `version` while its
-- window is open; keys no longer published get a row with is_deleted = 1. Read with FINAL
-- and add up the parts. Rows expire after the account's retention (privacy invariant 5).
CREATE TABLE IF NOT EXISTS cells
(
    account_id String,
    stream LowCardinality(String),
    granularity LowCardinality(String),
    window_start DateTime('UTC'),
    breakdown LowCardinality(String),
    value LowCardinality(String),
    views UInt64,
    unique_viewers UInt64,
    playing_seconds Float64,
    startup_hist Array(UInt32),
    rebuffer_count UInt64,
    rebuffer_seconds Float64,
    failures UInt64,
    failures_by_code Map(String, UInt32),
    exits_before_start UInt64,
    bitrate_kbps_seconds Float64,
    bitrate_seconds Float64,
    bitrate_changes UInt64,
    latency_ms_sum Float64,
    latency_count UInt64,
    concurrent_peak UInt32,
    part LowCardinality(String),
    retention_days UInt16,
    version UInt64,
    is_deleted UInt8
)
ENGINE = ReplacingMergeTree(version, is_deleted)
PARTITION BY toYYYYMM(window_start)
ORDER BY (account_id, stream, granularity, window_start, breakdown, value, part)
TTL toDateTime(window_start) + toIntervalDay(retention_days)
SETTINGS non_replicated_deduplication_window = 1000;
