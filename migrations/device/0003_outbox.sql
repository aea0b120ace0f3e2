-- What the device writes and must send: signed notes (and, later, record-view audit events).
-- Kept apart from the cached record: a rebuild, a purge or a must-resync never touches these
-- tables (they delete only patients, list_entries, resources and withheld). Encrypted with
-- the rest of cache.db.
CREATE TABLE outbox (
    -- Made on the device (UUID v4): the server stores an item once by it.
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    -- The item's body as it is sent (JSON): a signed note is never edited.
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('waiting', 'accepted', 'rejected')),
    -- Why the server refused it (state 'rejected').
    reason TEXT,
    accepted_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT
);

CREATE INDEX outbox_by_state ON outbox (state, created_at);
CREATE INDEX outbox_by_patient ON outbox (patient_id, created_at);

-- The note being written, one a patient: survives a restart and a lock.
CREATE TABLE drafts (
    patient_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
