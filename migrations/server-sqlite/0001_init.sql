-- Doorstep federation store, SQLite: the first schema.
--
-- Times are INTEGER Unix seconds (UTC); dates are TEXT 'YYYY-MM-DD'. Every table a future
-- PostgreSQL store needs has the same shape there; nothing here relies on SQLite-only types.

-- Every organisation seen in an import (practices, hospitals): ODS code and name.
CREATE TABLE organisations (
    ods TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The member GP practices: organisations that register patients.
CREATE TABLE practices (
    ods TEXT PRIMARY KEY REFERENCES organisations (ods),
    source_system TEXT,
    postcode TEXT
);

CREATE TABLE patients (
    id TEXT PRIMARY KEY,
    nhs_number TEXT NOT NULL UNIQUE,
    practice_ods TEXT NOT NULL REFERENCES practices (ods),
    birth_date TEXT,
    -- The patient opted out of sharing: only break-glass brings them onto a list.
    dissent INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);

-- FHIR R4 resources as imported (JSON), keyed by type and id, with index columns.
CREATE TABLE resources (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    -- NULL for resources about no patient (Organization, Practitioner).
    patient_id TEXT REFERENCES patients (id),
    section TEXT,
    json TEXT NOT NULL,
    -- Feed position of the last change.
    seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX resources_by_patient ON resources (patient_id, deleted);

-- The change feed: one row per change of a patient's resources, list entries or header.
-- A row says *what* changed; the pull reads the current state, so rows never hold data.
CREATE TABLE feed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL,
    resource_type TEXT,
    resource_id TEXT,
    op TEXT NOT NULL CHECK (op IN ('upsert', 'delete', 'list', 'header')),
    at INTEGER NOT NULL
);

-- Small named values: 'feed_pruned_through' (highest feed seq deleted by pruning).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Content-addressed sets of patient ids that devices hold; cursors carry the hash. Sets not
-- named by a cursor issued since the feed's retention horizon are pruned with the feed.
CREATE TABLE member_sets (
    hash TEXT PRIMARY KEY,
    patients TEXT NOT NULL,
    last_used_at INTEGER NOT NULL
);

CREATE TABLE services (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);

-- Sharing agreements, as the JSON of doorstep_record::agreement::Agreement.
CREATE TABLE agreements (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services (id),
    json TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    service_id TEXT NOT NULL REFERENCES services (id),
    -- Argon2id PHC string.
    password_hash TEXT NOT NULL,
    -- Base32 TOTP secret.
    totp_secret TEXT NOT NULL,
    -- Last TOTP time step accepted: a code is never accepted twice.
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER,
    revoked_at INTEGER
);

-- Access and refresh tokens, stored as SHA-256 hex of the token; the token itself is never kept.
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id),
    kind TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    -- Refresh tokens: when it was exchanged (rotation); a second use revokes the device's tokens.
    used_at INTEGER,
    revoked_at INTEGER
);
CREATE INDEX tokens_by_device ON tokens (device_id);

CREATE TABLE lists (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('caseload', 'appointment', 'incident', 'break_glass')),
    service_id TEXT NOT NULL REFERENCES services (id)
);

CREATE TABLE list_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    list_id TEXT NOT NULL REFERENCES lists (id),
    patient_id TEXT NOT NULL REFERENCES patients (id),
    reason TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    -- NULL: until discharged.
    ends_at INTEGER,
    -- Break-glass entries belong to the user who broke the glass.
    user_id TEXT REFERENCES users (id),
    created_at INTEGER NOT NULL
);
CREATE INDEX list_entries_by_list ON list_entries (list_id, patient_id);
CREATE INDEX list_entries_by_patient ON list_entries (patient_id);

-- Append-only, hash-chained audit log: hash = SHA-256(prev_hash | seq | at | actor | action |
-- patient_id | detail).
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    patient_id TEXT,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
