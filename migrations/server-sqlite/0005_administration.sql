-- Administration of the federation (issue 8): administrators' credentials, every version of
-- every agreement, and the exclusion value sets an administrator loaded. The current version
-- of an agreement stays in `agreements` (what the pull reads); `agreement_versions` keeps each
-- one as written, with who and why. (As server-postgres/0003_administration.sql.)

-- A federation administrator's credential (HTTP Basic NAME:SECRET on /api/v1/admin/...): the
-- secret is 256 random bits printed once by `doorstep-server admin add`; only its SHA-256 is kept.
CREATE TABLE admin_credentials (
    name TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Every version of an agreement, as the JSON of doorstep_record::agreement::Agreement.
CREATE TABLE agreement_versions (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    json TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (id, version)
);

-- Loaded exclusion value sets (FHIR R4 ValueSet JSON, as loaded), in load order. Every node
-- extends the shipped RCGP floor by all of them; the highest seq is the value-set version
-- each request compares with what it holds.
CREATE TABLE value_sets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL,
    json TEXT NOT NULL,
    loaded_at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL
);
