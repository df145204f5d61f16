-- The citizen's rights (DESIGN.md §15), PostgreSQL dialect: every export,
-- erasure and retention purge, audited without personal data (the subject is
-- the sha256 of the identifier used to find it).
CREATE TABLE privacy_audit (
    id           BIGSERIAL PRIMARY KEY,
    at_ms        BIGINT NOT NULL,
    action       TEXT NOT NULL,
    actor        TEXT NOT NULL,
    subject_hash TEXT NOT NULL,
    tickets      BIGINT NOT NULL
);
