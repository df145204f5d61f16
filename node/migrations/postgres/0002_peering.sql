-- Peering (DESIGN.md §4), PostgreSQL dialect. See the SQLite twin for notes.

ALTER TABLE tickets ADD COLUMN pending_to TEXT NOT NULL DEFAULT '';
CREATE INDEX tickets_pending_to ON tickets (pending_to) WHERE pending_to <> '';

CREATE TABLE outbox (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    peer          TEXT NOT NULL,
    kind          BIGINT NOT NULL,
    item          TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    not_before_ms BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outbox_by_peer ON outbox (peer, seq);

CREATE TABLE ticket_participants (
    node      TEXT NOT NULL,
    ticket_id TEXT NOT NULL,
    PRIMARY KEY (node, ticket_id)
);
