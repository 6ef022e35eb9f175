-- A change of an account's k waits for the next UTC day (no window mixes two k):
-- next_k (0: no change pending) is the k in force from next_k_from on; k stays the k of the
-- days before. The store folds next_k into k on its next write after that day.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS next_k UInt8 DEFAULT 0 AFTER k;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS next_k_from Date DEFAULT toDate(0) AFTER next_k;
