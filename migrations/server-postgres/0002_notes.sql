-- Items devices pushed (consultation notes), stored once by the id the device made, with the
-- first answer they got, and the delivery of an accepted note to the patient's registered
-- practice. The write-back FHIR lives in `resources` like the rest of the record; these rows
-- are what the push and the practice inbox decide on. (As server-sqlite/0004_notes.sql.)
CREATE TABLE notes (
    -- The client-made UUID: a resend is found by it (INSERT ... ON CONFLICT DO NOTHING).
    id text PRIMARY KEY,
    -- As sent; for a rejected item it may name no stored patient.
    patient_id text NOT NULL,
    author_user_id text NOT NULL REFERENCES users (id),
    device_id text NOT NULL REFERENCES devices (id),
    service_id text NOT NULL,
    kind text NOT NULL,
    -- The NoteBody JSON of an accepted note; NULL for a rejected item.
    body text,
    created_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    reason text,
    delivery_state text CHECK (delivery_state IN ('accepted', 'received', 'filed', 'rejected')),
    delivery_at timestamptz,
    delivery_reason text,
    practice_ods text,
    CHECK ((outcome = 'accepted') = (delivery_state IS NOT NULL))
);
CREATE INDEX notes_by_practice ON notes (practice_ods, delivery_state);
