-- Parts a merge or mutation replaced ("outdated" parts) stay on disk for old_parts_lifetime
-- (480 s by default): an account's old name, origins and embed key, and its streams after a
-- purge, would be readable there. Every table with an account_id column drops them after
-- 1 s. That default protects merged parts that were not fsynced yet; here merges and
-- mutations fsync their result (min_compressed_bytes_to_fsync_after_merge = 1,
-- fsync_part_directory = 1), so the old parts are not needed to survive a crash.
-- aggregator/purge/purger.py applies the same settings to any table it purges (PART_SETTINGS).
ALTER TABLE accounts MODIFY SETTING old_parts_lifetime = 1, min_compressed_bytes_to_fsync_after_merge = 1, fsync_part_directory = 1;
ALTER TABLE api_tokens MODIFY SETTING old_parts_lifetime = 1, min_compressed_bytes_to_fsync_after_merge = 1, fsync_part_directory = 1;
ALTER TABLE cells MODIFY SETTING old_parts_lifetime = 1, min_compressed_bytes_to_fsync_after_merge = 1, fsync_part_directory = 1;
ALTER TABLE audit MODIFY SETTING old_parts_lifetime = 1, min_compressed_bytes_to_fsync_after_merge = 1, fsync_part_directory = 1;
