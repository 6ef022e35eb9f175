-- The audit log: one row per customer read, export, purge, token and account change.
-- No viewer data ever: `summary` is the JSON of the request's parameters (stream, range,
-- format, token prefix...), and `actor` is the caller's token prefix ("st_AbCde") or "admin",
-- never a full token. Each row carries the retention in force when it was written
-- (setting audit_retention_days), so changing the setting needs no ALTER TABLE.
CREATE TABLE IF NOT EXISTS audit
(
    time DateTime64(3, 'UTC'),
    account_id String,
    actor String,
    action LowCardinality(String),
    summary String,
    retention_days UInt16
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (account_id, time)
TTL toDateTime(time) + toIntervalDay(retention_days);
