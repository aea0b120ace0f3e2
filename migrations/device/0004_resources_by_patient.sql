-- Resources keyed by patient, then type and id.
--
-- A sync adds patients in id order (the server sends new patients sorted by id), so their keys
-- land at the end of this key's index. The unique (type, id) index it replaces took every
-- insert at a random place, so each page's commit rewrote most of that index's pages: the
-- initial sync of 1,000 patients wrote several times the data it stored (BENCHMARKS.md).
--
-- `json` holds what the device writes now: the resource deflated against a fixed dictionary
-- (crates/client/src/stored.rs), a BLOB; rows copied from schema 3 stay TEXT and are read as
-- they are.
--
-- (type, id) need not be unique any more: a resource that moves to another patient reaches
-- the device as an Upsert for the new patient and a Delete for the old one
-- (server/src/pull.rs), and each change names its patient.
CREATE TABLE resources_by_patient (
    patient_id TEXT NOT NULL,
    type       TEXT NOT NULL,
    id         TEXT NOT NULL,
    json       BLOB NOT NULL,
    as_of      TEXT NOT NULL,
    PRIMARY KEY (patient_id, type, id)
);
INSERT INTO resources_by_patient (patient_id, type, id, json, as_of)
    SELECT patient_id, type, id, json, as_of FROM resources ORDER BY patient_id, type, id;
DROP TABLE resources;
ALTER TABLE resources_by_patient RENAME TO resources;
