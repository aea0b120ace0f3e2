-- Doorstep federation store, PostgreSQL: the first schema.
--
-- The same tables as migrations/server-sqlite (0001 to 0003), in PostgreSQL's types:
-- times are timestamptz holding whole seconds (the server truncates before writing, as
-- SQLite's Unix seconds do, so the audit chain hashes the same value on every backend); dates
-- are date; flags are boolean. JSON is kept as text, never jsonb: the stored text is handed
-- back byte for byte (the pull sends it as it is, the import compares it, the audit chain
-- hashes it), and jsonb would reorder keys and normalise numbers.

-- Every organisation seen in an import (practices, hospitals): ODS code and name.
CREATE TABLE organisations (
    ods text PRIMARY KEY,
    name text NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The member GP practices: organisations that register patients.
CREATE TABLE practices (
    ods text PRIMARY KEY REFERENCES organisations (ods),
    source_system text,
    postcode text
);

CREATE TABLE patients (
    id text PRIMARY KEY,
    nhs_number text NOT NULL UNIQUE,
    practice_ods text NOT NULL REFERENCES practices (ods),
    birth_date date,
    -- The patient opted out of sharing: only break-glass brings them onto a list.
    dissent boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL
);

-- FHIR R4 resources as imported (JSON text), keyed by type and id, with index columns.
CREATE TABLE resources (
    resource_type text NOT NULL,
    id text NOT NULL,
    -- NULL for resources about no patient (Organization, Practitioner).
    patient_id text REFERENCES patients (id),
    section text,
    json text NOT NULL,
    -- Feed position of the last change.
    seq bigint NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (resource_type, id)
);
CREATE INDEX resources_by_patient ON resources (patient_id, deleted);

-- The change feed: one row per change of a patient's resources, list entries or header.
-- Seqs come from the column's sequence and are taken only while holding the feed lock
-- (pg_advisory_xact_lock, see server/src/store/postgres.rs), so seq order is commit order.
CREATE TABLE feed (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id text NOT NULL,
    resource_type text,
    resource_id text,
    op text NOT NULL CHECK (op IN ('upsert', 'delete', 'list', 'header')),
    at timestamptz NOT NULL
);
CREATE INDEX feed_by_time ON feed (at);

-- Small named values: 'feed_pruned_through' (highest feed seq deleted by pruning).
CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

-- Content-addressed sets of patient ids that devices hold; cursors carry the hash.
CREATE TABLE member_sets (
    hash text PRIMARY KEY,
    patients text[] NOT NULL,
    last_used_at timestamptz NOT NULL
);

-- Secrets every node of the federation shares (the cursor signing key), made once by
-- whichever node starts first.
CREATE TABLE server_keys (
    name text PRIMARY KEY,
    key bytea NOT NULL,
    created_at timestamptz NOT NULL
);

-- The credential a member practice's own source system imports with (POST /api/v1/import):
-- one secret a practice, stored as its SHA-256.
CREATE TABLE source_credentials (
    ods text PRIMARY KEY REFERENCES practices (ods),
    secret_hash text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE services (
    id text PRIMARY KEY,
    name text NOT NULL
);

-- Sharing agreements, as the JSON of doorstep_record::agreement::Agreement.
CREATE TABLE agreements (
    id text PRIMARY KEY,
    service_id text NOT NULL REFERENCES services (id),
    json text NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE users (
    id text PRIMARY KEY,
    username text NOT NULL UNIQUE,
    display_name text NOT NULL,
    role text NOT NULL,
    service_id text NOT NULL REFERENCES services (id),
    -- Argon2id PHC string.
    password_hash text NOT NULL,
    -- Base32 TOTP secret.
    totp_secret text NOT NULL,
    -- Last TOTP time step accepted: a code is never accepted twice, on any node.
    totp_last_step bigint NOT NULL DEFAULT 0,
    failed_attempts integer NOT NULL DEFAULT 0,
    locked_until timestamptz,
    disabled boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL
);

CREATE TABLE devices (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id),
    name text NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen_at timestamptz,
    revoked_at timestamptz
);

-- Access and refresh tokens, stored as SHA-256 hex of the token; the token itself is never kept.
CREATE TABLE tokens (
    hash text PRIMARY KEY,
    device_id text NOT NULL REFERENCES devices (id),
    kind text NOT NULL CHECK (kind IN ('access', 'refresh')),
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    -- Refresh tokens: when it was exchanged (rotation); a second use revokes the device's tokens.
    used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX tokens_by_device ON tokens (device_id);

CREATE TABLE lists (
    id text PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('caseload', 'appointment', 'incident', 'break_glass')),
    service_id text NOT NULL REFERENCES services (id)
);

CREATE TABLE list_entries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    list_id text NOT NULL REFERENCES lists (id),
    patient_id text NOT NULL REFERENCES patients (id),
    reason text NOT NULL,
    starts_at timestamptz NOT NULL,
    -- NULL: until discharged.
    ends_at timestamptz,
    -- Break-glass entries belong to the user who broke the glass.
    user_id text REFERENCES users (id),
    created_at timestamptz NOT NULL
);
CREATE INDEX list_entries_by_list ON list_entries (list_id, patient_id);
CREATE INDEX list_entries_by_patient ON list_entries (patient_id);

-- Append-only, hash-chained audit log: hash = SHA-256(prev_hash | seq | at | actor | action |
-- patient_id | detail). seq is given by the writer (the chain's tip + 1); its primary key is
-- what refuses a second row sealed on the same tip.
CREATE TABLE audit (
    seq bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    patient_id text,
    detail text NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL
);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END;
$$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
