-- Streams an account declares: exact stream names (CMCD cid) and glob patterns (match-*).
-- A declared name is kept as the player sends it; any other name passes the collector's
-- identifier screen (collector/screen.py). Empty for accounts made before, and in a tombstone.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS streams Array(String) AFTER origins;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS stream_patterns Array(String) AFTER streams;
