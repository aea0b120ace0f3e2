-- The people around the clinician (issue 11): receptionists of member practices, staff
-- sign-ins without a device, the sessions a service publishes and the bookings into them.
-- What may be booked, by whom, is decided in server/src/bookings.rs.
-- (As server-postgres/0006_bookings.sql.)

-- The member practice a user works at (a receptionist); NULL for a service's own staff.
ALTER TABLE users ADD COLUMN practice_ods TEXT REFERENCES practices (ods);

-- Staff sign-ins (receptionists, team leaders, service managers): a bearer token, stored as
-- its SHA-256; no device, no refresh, no records.
CREATE TABLE staff_tokens (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    issued_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- A session a service publishes: a clinician's time cut into `slots` equal slots, with its
-- own appointment list (owned by the clinician) whose entries are the bookings.
CREATE TABLE clinic_sessions (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL REFERENCES services (id),
    list_id TEXT NOT NULL REFERENCES lists (id),
    clinician_user_id TEXT NOT NULL REFERENCES users (id),
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    slots INTEGER NOT NULL CHECK (slots > 0),
    created_at INTEGER NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX clinic_sessions_by_time ON clinic_sessions (starts_at);

CREATE TABLE bookings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES clinic_sessions (id),
    slot INTEGER NOT NULL,
    slot_starts_at INTEGER NOT NULL,
    patient_id TEXT NOT NULL REFERENCES patients (id),
    entry_id INTEGER NOT NULL REFERENCES list_entries (id),
    reason TEXT NOT NULL,
    booked_by TEXT NOT NULL REFERENCES users (id),
    booked_at INTEGER NOT NULL,
    cancelled_at INTEGER,
    cancelled_by TEXT,
    cancel_reason TEXT
);
-- One live booking a slot: two receptionists booking the last slot at once, one wins.
CREATE UNIQUE INDEX bookings_one_a_slot ON bookings (session_id, slot) WHERE cancelled_at IS NULL;
CREATE INDEX bookings_by_slot_time ON bookings (slot_starts_at);

-- The figures read record views and break-glass accesses by action and time.
CREATE INDEX audit_by_action ON audit (action, at);
-- And notes by when they were made.
CREATE INDEX notes_by_created ON notes (created_at);
