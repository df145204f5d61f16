-- The shared FAQ set (DESIGN.md §5), SQLite dialect.

-- Every FAQ version this node holds, byte for byte as signed: the owner's
-- own versions all, other bodies' versions as they reached this node (the
-- history `faq show` prints). `sha` is the hex sha256 of the signed payload;
-- two contents signed under one version number are two rows.
CREATE TABLE faq_versions (
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

-- The version of each entry that won the merge (the greatest): what
-- searches show and anti-entropy spreads.
CREATE TABLE faq_current (
    owner    TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    version  INTEGER NOT NULL,
    sha      TEXT NOT NULL,
    PRIMARY KEY (owner, entry_id)
) WITHOUT ROWID;

-- This node's local overrides: content shown here instead of the shared
-- entry's, never signed, never sent. `content` is an encoded FaqContent.
CREATE TABLE faq_overrides (
    owner     TEXT NOT NULL,
    entry_id  TEXT NOT NULL,
    content   BLOB NOT NULL,
    reason    TEXT NOT NULL,
    set_by    TEXT NOT NULL,
    set_at_ms INTEGER NOT NULL,
    PRIMARY KEY (owner, entry_id)
) WITHOUT ROWID;
