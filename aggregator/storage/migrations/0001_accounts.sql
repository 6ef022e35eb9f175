-- Accounts and their API tokens. Rows are never updated in place: a change (new origins,
-- deletion, a revoked token) is a new row with a higher `version`, and the newest version
-- of a key wins. Always read with FINAL.

-- One row per version of an account. deleted = 1 keeps the account known (reports get 410).
CREATE TABLE IF NOT EXISTS accounts
(
    account_id String,
    name String,
    embed_key String,
    origins Array(String),
    k UInt8,
    retention_days UInt16,
    deleted UInt8,
    created_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY account_id;

-- API tokens, stored only as the SHA-256 hex of the token; prefix is its first 8 characters,
-- shown to users to tell tokens apart.
CREATE TABLE IF NOT EXISTS api_tokens
(
    account_id String,
    token_id String,
    prefix String,
    token_hash String,
    created_at DateTime64(3, 'UTC'),
    revoked UInt8,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (account_id, token_id);
