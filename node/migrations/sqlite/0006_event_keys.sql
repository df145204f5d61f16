-- Events are keyed by (ticket, author, id), not by id alone: an id reused by
-- another author (or on another ticket) is another event, and can neither
-- shadow an honest event nor abort a batch between honest nodes
-- (docs/security.md, T1).
CREATE TABLE ticket_events_new (
    ticket_id   TEXT NOT NULL,
    author_node TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    hlc_wall    INTEGER NOT NULL,
    hlc_logical INTEGER NOT NULL,
    envelope    BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (ticket_id, author_node, event_id)
) WITHOUT ROWID;
INSERT INTO ticket_events_new (ticket_id, author_node, event_id, hlc_wall, hlc_logical, envelope, received_ms)
    SELECT ticket_id, author_node, event_id, hlc_wall, hlc_logical, envelope, received_ms FROM ticket_events;
DROP TABLE ticket_events;
ALTER TABLE ticket_events_new RENAME TO ticket_events;
CREATE INDEX ticket_events_by_ticket ON ticket_events (ticket_id, hlc_wall, hlc_logical);
CREATE INDEX ticket_events_by_id ON ticket_events (event_id);
