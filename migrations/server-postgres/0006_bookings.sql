-- The people around the clinician (issue 11): receptionists of member practices, staff
-- sign-ins without a device, the sessions a service publishes and the bookings into them.
-- What may be booked, by whom, is decided in server/src/bookings.rs.
-- (As server-sqlite/0008_bookings.sql.)

-- The member practice a user works at (a receptionist); NULL for a service's own staff.
ALTER TABLE users ADD COLUMN practice_ods text REFERENCES practices (ods);

-- Staff sign-ins (receptionists, team leaders, service managers): a bearer token, stored as
-- its SHA-256; no device, no refresh, no records.
CREATE TABLE staff_tokens (
    hash text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id),
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);

-- A session a service publishes: a clinician's time cut into `slots` equal slots, with its
-- own appointment list (owned by the clinician) whose entries are the bookings.
CREATE TABLE clinic_sessions (
    id text PRIMARY KEY,
    service_id text NOT NULL REFERENCES services (id),
    list_id text NOT NULL REFERENCES lists (id),
    clinician_user_id text NOT NULL REFERENCES users (id),
    starts_at timestamptz NOT NULL,
    ends_at timestamptz NOT NULL,
    slots integer NOT NULL CHECK (slots > 0),
    created_at timestamptz NOT NULL,
    CHECK (ends_at > starts_at)
);
CREATE INDEX clinic_sessions_by_time ON clinic_sessions (starts_at);

CREATE TABLE bookings (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id text NOT NULL REFERENCES clinic_sessions (id),
    slot integer NOT NULL,
    slot_starts_at timestamptz NOT NULL,
    patient_id text NOT NULL REFERENCES patients (id),
    entry_id bigint NOT NULL REFERENCES list_entries (id),
    reason text NOT NULL,
    booked_by text NOT NULL REFERENCES users (id),
    booked_at timestamptz NOT NULL,
    cancelled_at timestamptz,
    cancelled_by text,
    cancel_reason text
);
-- One live booking a slot: two receptionists booking the last slot at once, one wins.
CREATE UNIQUE INDEX bookings_one_a_slot ON bookings (session_id, slot) WHERE cancelled_at IS NULL;
CREATE INDEX bookings_by_slot_time ON bookings (slot_starts_at);

-- The figures read record views and break-glass accesses by action and time.
CREATE INDEX audit_by_action ON audit (action, at);
-- And notes by when they were made.
CREATE INDEX notes_by_created ON notes (created_at);
