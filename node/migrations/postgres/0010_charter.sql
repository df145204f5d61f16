-- The service charters (DESIGN.md §12): shared documents kept exactly like
-- FAQ versions (same columns, same code: node/src/replica/tables.rs).

-- Every charter version this node holds, byte for byte as signed: the
-- body's own versions all, other bodies' versions as they reached this
-- node. The history ("what did the charter say on 1 March") is read here.
CREATE TABLE charter_versions (
    owner       TEXT NOT NULL,
    entry_id    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    sha         TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    retired     BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    envelope    BYTEA NOT NULL,
    PRIMARY KEY (owner, entry_id, version, sha)
);

-- Each body's current charter version (the greatest).
CREATE TABLE charter_current (
    owner    TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    version  BIGINT NOT NULL,
    sha      TEXT NOT NULL,
    PRIMARY KEY (owner, entry_id)
);
