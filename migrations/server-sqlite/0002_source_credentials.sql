-- The credential a member practice's own source system imports with (POST /api/v1/import):
-- one secret a practice, stored as its SHA-256 (the secret is 256 random bits, so a fast
-- hash is enough; the plain secret is printed once by `doorstep-server practice add`).
CREATE TABLE source_credentials (
    ods TEXT PRIMARY KEY REFERENCES practices (ods),
    secret_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
