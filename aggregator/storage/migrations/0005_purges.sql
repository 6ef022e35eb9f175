-- Account purges. A row with state 'running' is written (and fsynced) before a purge
-- touches anything; the same key is rewritten with state 'done', finished_at and the
-- receipt (JSON) when the purge is verified. A 'running' row found at start is resumed.
-- This row, and the account's tombstone in `accounts`, are all that is kept of an account.
CREATE TABLE IF NOT EXISTS purges
(
    account_id String,
    actor String,
    started_at DateTime64(3, 'UTC'),
    finished_at Nullable(DateTime64(3, 'UTC')),
    state LowCardinality(String),
    receipt String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY account_id
SETTINGS fsync_after_insert = 1, fsync_part_directory = 1;
