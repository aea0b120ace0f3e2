-- Secrets every node of the federation shares, kept in the database rather than a node's data
-- directory: the cursor signing key ('cursor'), so any node accepts a cursor another node
-- issued. Made once with insert-if-absent and read back, so concurrent first starts agree; a
-- data directory from before this migration has its `cursor-key` file adopted (run.rs).
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
