-- Accountability (issue 10): who accessed a patient is an indexed read of the audit log (one
-- event a patient for every pull page that carried them, every record view, every
-- break-glass), and the chain's head is signed at intervals so that a cut tail shows.
-- (As server-postgres/0005_audit_access.sql.)

CREATE INDEX audit_by_patient ON audit (patient_id, seq);

-- Break-glass finds a patient by date of birth and family name (the name is in the Patient
-- resource, compared in server/src/breakglass.rs).
CREATE INDEX patients_by_birth_date ON patients (birth_date);

-- Signed checkpoints of the chain head: the signature is over (seq, hash, at) with the
-- node's audit key, kept in its data directory, never in the database.
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    at INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;

-- Record and section views made on devices, stored once by the id the device made (a resend
-- of the outbox item is a duplicate); the view itself is an audit event.
CREATE TABLE device_views (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id),
    received_at INTEGER NOT NULL
);

-- Break-glass alerts for the privacy officer.
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    patient_id TEXT NOT NULL REFERENCES patients (id),
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    entry_id INTEGER NOT NULL REFERENCES list_entries (id),
    acked_at INTEGER,
    acked_by TEXT,
    ack_note TEXT
);
CREATE INDEX alerts_open ON alerts (acked_at, id);
