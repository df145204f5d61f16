-- The anonymised archive's outbox (DESIGN.md §7). One row per ticket this
-- node closed: `record` is the encoded urpnet.v1.ArchiveRecord, `id` its
-- keyed hash (the same ticket always gives the same id, so re-making a
-- record is a no-op). `seq` is the order records were made, the cursor of
-- replication to the registry.
CREATE TABLE archive_outbox (
    seq     INTEGER PRIMARY KEY,
    id      BLOB NOT NULL UNIQUE,
    record  BLOB NOT NULL,
    made_ms INTEGER NOT NULL
);

-- Cursors and tallies of the archive, by name: `swept_ms` (closed tickets
-- updated before it were anonymised), `sent_seq` (the registry acknowledged
-- every record up to it), `refused` (records the registry refused),
-- `last_push_ms`.
CREATE TABLE archive_state (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX tickets_closed ON tickets (owner_node, status, updated_ms);
