-- Members of the network: one row per enrolled body.
CREATE TABLE members (
    id             TEXT PRIMARY KEY,     -- IPA code
    display_name   TEXT NOT NULL,
    level          INTEGER NOT NULL,     -- urpnet.v1.Level
    territory      TEXT NOT NULL,        -- ISTAT codes joined by ','
    endpoint       TEXT NOT NULL,
    signing_key    BYTEA NOT NULL,        -- ed25519 public key, 32 bytes
    status         INTEGER NOT NULL,     -- urpnet.v1.MemberStatus
    status_reason  TEXT NOT NULL,
    enrolled_at_ms BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);

-- Every certificate the federation CA issued (nodes and coordinators).
CREATE TABLE certificates (
    serial        TEXT PRIMARY KEY,      -- hex
    subject       TEXT NOT NULL,         -- identity URI
    not_before_ms BIGINT NOT NULL,
    not_after_ms  BIGINT NOT NULL,
    issued_at_ms  BIGINT NOT NULL
);
CREATE INDEX certificates_by_subject ON certificates (subject, issued_at_ms);

-- Every taxonomy version ever imported; the highest is current.
CREATE TABLE taxonomies (
    version        INTEGER PRIMARY KEY,
    body           BYTEA NOT NULL,        -- encoded urpnet.v1.Taxonomy
    imported_at_ms BIGINT NOT NULL,
    imported_by    TEXT NOT NULL
);

-- Counters: membership_version.
CREATE TABLE registry_meta (
    key   TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO registry_meta (key, value) VALUES ('membership_version', 0);
