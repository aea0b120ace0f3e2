-- Accountability (issue 10): who accessed a patient is an indexed read of the audit log (one
-- event a patient for every pull page that carried them, every record view, every
-- break-glass), and the chain's head is signed at intervals so that a cut tail shows.
-- (As server-sqlite/0007_audit_access.sql.)

CREATE INDEX audit_by_patient ON audit (patient_id, seq);

-- Break-glass finds a patient by date of birth and family name (the name is in the Patient
-- resource, compared in server/src/breakglass.rs).
CREATE INDEX patients_by_birth_date ON patients (birth_date);

-- Signed checkpoints of the chain head: the signature is over (seq, hash, at) with the
-- node's audit key, kept in its data directory, never in the database.
CREATE TABLE audit_checkpoints (
    seq bigint PRIMARY KEY,
    hash text NOT NULL,
    at timestamptz NOT NULL,
    key_id text NOT NULL,
    signature text NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Record and section views made on devices, stored once by the id the device made (a resend
-- of the outbox item is a duplicate); the view itself is an audit event.
CREATE TABLE device_views (
    id text PRIMARY KEY,
    device_id text NOT NULL REFERENCES devices (id),
    received_at timestamptz NOT NULL
);

-- Break-glass alerts for the privacy officer.
CREATE TABLE alerts (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    user_id text NOT NULL REFERENCES users (id),
    patient_id text NOT NULL REFERENCES patients (id),
    reason text NOT NULL,
    detail text NOT NULL,
    entry_id bigint NOT NULL REFERENCES list_entries (id),
    acked_at timestamptz,
    acked_by text,
    ack_note text
);
CREATE INDEX alerts_open ON alerts (acked_at, id);
