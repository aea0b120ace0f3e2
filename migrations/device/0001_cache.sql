-- Doorstep device cache, schema 1.
--
-- This database is SQLCipher-encrypted with a key derived from the clinician's PIN; nothing in
-- it is readable without that key. It holds the user's list as the server last sent it: the
-- patients, their list entries, their FHIR resources (filtered by the sharing agreements on the
-- server) and per-section counts of withheld items. Everything here except `meta` is rebuilt from
-- scratch when the server answers a pull with 410 (must-resync); an outbox, when it exists, is
-- kept apart and survives that rebuild.

-- Sync state and identity: cursor, last_synced, last_error, server_reachable, as_of, tokens,
-- the signed-in user (JSON). One row per key.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per patient on the list, with the columns the list screen shows and searches on, so
-- that a search over 10,000 patients never parses JSON.
CREATE TABLE patients (
    id            TEXT PRIMARY KEY NOT NULL,
    nhs_number    TEXT NOT NULL,            -- ten digits
    family        TEXT NOT NULL,
    given         TEXT NOT NULL,
    name_display  TEXT NOT NULL,            -- 'EVANS, Siân (Mrs)'
    name_search   TEXT NOT NULL,            -- lower-cased, diacritics folded, ' sian evans '
    name_sort     TEXT NOT NULL,            -- folded 'evans sian', the list's order by name
    birth_date    TEXT,                     -- yyyy-mm-dd
    postcode      TEXT,                     -- normalised: upper case, no space ('LS14AB')
    address       TEXT NOT NULL,            -- one line
    practice_ods  TEXT,
    practice_name TEXT NOT NULL,
    alerts        TEXT NOT NULL DEFAULT '', -- badges, comma-separated ('DNACPR,Allergies')
    as_of         TEXT NOT NULL             -- server time of the page that last changed the patient
);
CREATE INDEX patients_nhs_number ON patients (nhs_number);
CREATE INDEX patients_postcode ON patients (postcode);
CREATE INDEX patients_birth_date ON patients (birth_date);

-- Why the patient is on the list; replaced whole by patient_added and list_changed.
CREATE TABLE list_entries (
    patient_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,               -- caseload, appointment, incident, break_glass
    list_name  TEXT NOT NULL,
    reason     TEXT NOT NULL,
    starts_at  TEXT NOT NULL,               -- RFC 3339, UTC
    ends_at    TEXT,
    PRIMARY KEY (patient_id, seq)
) WITHOUT ROWID;

-- The FHIR R4 resources of each patient, as the server sent them.
-- A rowid table: the JSON makes rows large, which WITHOUT ROWID tables handle badly.
CREATE TABLE resources (
    type       TEXT NOT NULL,
    id         TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    json       TEXT NOT NULL,
    as_of      TEXT NOT NULL,
    UNIQUE (type, id)
);
CREATE INDEX resources_patient ON resources (patient_id, type);

-- How many items of each section the agreements withheld (counts only, never what they were).
CREATE TABLE withheld (
    patient_id TEXT NOT NULL,
    section    TEXT NOT NULL,
    count      INTEGER NOT NULL,
    PRIMARY KEY (patient_id, section)
) WITHOUT ROWID;
