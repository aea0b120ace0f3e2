-- Resources stored in their key's b-tree (WITHOUT ROWID).
--
-- As a rowid table with PRIMARY KEY (patient_id, type, id), schema 4 kept every row twice
-- over: the table by rowid, and an automatic index holding the key again plus the rowid.
-- Nothing reads resources by rowid; every query goes by patient, then type (and id). Keyed
-- by the primary key itself, the rows are stored once, in key order, and a lookup takes one
-- b-tree instead of two (BENCHMARKS.md, cache on disk).
--
-- `json` keeps what each row held: deflated BLOBs (crates/client/src/stored.rs) or TEXT
-- copied from schema 3.
CREATE TABLE resources_by_key (
    patient_id TEXT NOT NULL,
    type       TEXT NOT NULL,
    id         TEXT NOT NULL,
    json       BLOB NOT NULL,
    as_of      TEXT NOT NULL,
    PRIMARY KEY (patient_id, type, id)
) WITHOUT ROWID;
INSERT INTO resources_by_key (patient_id, type, id, json, as_of)
    SELECT patient_id, type, id, json, as_of FROM resources ORDER BY patient_id, type, id;
DROP TABLE resources;
ALTER TABLE resources_by_key RENAME TO resources;
