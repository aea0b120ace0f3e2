-- Items devices pushed (consultation notes), stored once by the id the device made, with the
-- first answer they got, and the delivery of an accepted note to the patient's registered
-- practice. The write-back FHIR lives in `resources` like the rest of the record; these rows
-- are what the push and the practice inbox decide on.
CREATE TABLE notes (
    -- The client-made UUID: a resend is found by it (INSERT ... ON CONFLICT DO NOTHING).
    id TEXT PRIMARY KEY,
    -- As sent; for a rejected item it may name no stored patient.
    patient_id TEXT NOT NULL,
    author_user_id TEXT NOT NULL REFERENCES users (id),
    device_id TEXT NOT NULL REFERENCES devices (id),
    service_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- The NoteBody JSON of an accepted note; NULL for a rejected item (only the refusal is kept).
    body TEXT,
    -- The device's clock when it made the item; the server's when it arrived.
    created_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    -- Why it was rejected.
    reason TEXT,
    -- Accepted notes: where the note stands with the practice, since when, and why (rejected).
    delivery_state TEXT CHECK (delivery_state IN ('accepted', 'received', 'filed', 'rejected')),
    delivery_at INTEGER,
    delivery_reason TEXT,
    -- The registered practice the note is addressed to (at acceptance).
    practice_ods TEXT,
    CHECK ((outcome = 'accepted') = (delivery_state IS NOT NULL))
);
CREATE INDEX notes_by_practice ON notes (practice_ods, delivery_state);
