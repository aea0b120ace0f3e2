-- Administration of the federation (issue 8): administrators' credentials, every version of
-- every agreement, and the exclusion value sets an administrator loaded. The current version
-- of an agreement stays in `agreements` (what the pull reads); `agreement_versions` keeps each
-- one as written, with who and why. (As server-sqlite/0005_administration.sql.)

CREATE TABLE admin_credentials (
    name text PRIMARY KEY,
    secret_hash text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE agreement_versions (
    id text NOT NULL,
    version integer NOT NULL,
    json text NOT NULL,
    changed_at timestamptz NOT NULL,
    actor text NOT NULL,
    reason text NOT NULL,
    PRIMARY KEY (id, version)
);

-- The highest seq is the value-set version every node compares with what it holds.
CREATE TABLE value_sets (
    seq bigserial PRIMARY KEY,
    url text NOT NULL,
    json text NOT NULL,
    loaded_at timestamptz NOT NULL,
    actor text NOT NULL,
    reason text NOT NULL
);
