-- Differential-privacy mode per account (aggregator/noise.py, aggregator/budget.py).
-- privacy: 'k' (k-anonymity only, the default) or 'dp' (noise on every released part, on top
-- of the k floor). privacy_from: the UTC day from which these settings apply (a change takes
-- effect from the next UTC day, never inside a day whose parts are already released).
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS privacy LowCardinality(String) DEFAULT 'k' AFTER retention_days;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS epsilon_per_day Float64 DEFAULT 0 AFTER privacy;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS delta Float64 DEFAULT 0 AFTER epsilon_per_day;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS privacy_from Date DEFAULT '1970-01-01' AFTER delta;

-- The privacy budget of dp accounts, per account and UTC day: the largest epsilon any one
-- viewer key of that day has spent (no viewer key is stored), and parts released / held back.
CREATE TABLE IF NOT EXISTS privacy_budget
(
    account_id String,
    day Date,
    epsilon_per_day Float64,
    delta_per_part Float64,
    epsilon_spent Float64,
    delta_spent Float64,
    parts_released UInt64,
    parts_held UInt64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (account_id, day)
SETTINGS old_parts_lifetime = 1, min_compressed_bytes_to_fsync_after_merge = 1, fsync_part_directory = 1;
