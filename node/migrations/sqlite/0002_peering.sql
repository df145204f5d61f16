-- Peering (DESIGN.md §4), SQLite dialect.

-- Offers waiting for an answer: the target node of the pending handoff, so
-- the inbox is an index lookup. Empty when none is pending.
ALTER TABLE tickets ADD COLUMN pending_to TEXT NOT NULL DEFAULT '';
CREATE INDEX tickets_pending_to ON tickets (pending_to) WHERE pending_to <> '';

-- The transactional outbox: one row per item and destination peer, written
-- in the same transaction as the event (or contact) it carries. `kind` 1 is
-- a ticket event (`item` = event id), 2 a citizen contact (`item` = ticket
-- id). A row is deleted only once the peer has acknowledged it. Rows a peer
-- asked to retry later wait until `not_before_ms`.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY,
    peer          TEXT NOT NULL,
    kind          INTEGER NOT NULL,
    item          TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    not_before_ms INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outbox_by_peer ON outbox (peer, seq);

-- Which other nodes take part in which ticket (this node excluded), for
-- anti-entropy and for refusing non-participants.
CREATE TABLE ticket_participants (
    node      TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    PRIMARY KEY (node, ticket_id)
) WITHOUT ROWID;
