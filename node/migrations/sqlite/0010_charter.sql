-- The service charters (DESIGN.md §12): shared documents kept exactly like
-- FAQ versions (same columns, same code: node/src/replica/tables.rs).

-- Every charter version this node holds, byte for byte as signed: the
-- body's own versions all, other bodies' versions as they reached this
-- node. The history ("what did the charter say on 1 March") is read here.
CREATE TABLE charter_versions (
    owner       TEXT NOT NULL,
    entry_id    TEXT NOT NULL,
    version     INTEGER NOT NULL,
    sha         TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    retired     INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    envelope    BLOB NOT NULL,
    PRIMARY KEY (owner, entry_id, version, sha)
) WITHOUT ROWID;

-- Each body's current charter version (the greatest).
CREATE TABLE charter_current (
    owner    TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    version  INTEGER NOT NULL,
    sha      TEXT NOT NULL,
    PRIMARY KEY (owner, entry_id)
) WITHOUT ROWID;
