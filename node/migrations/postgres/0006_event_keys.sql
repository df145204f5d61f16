-- Events are keyed by (ticket, author, id), not by id alone: an id reused by
-- another author (or on another ticket) is another event, and can neither
-- shadow an honest event nor abort a batch between honest nodes
-- (docs/security.md, T1).
ALTER TABLE ticket_events DROP CONSTRAINT ticket_events_pkey;
ALTER TABLE ticket_events ADD PRIMARY KEY (ticket_id, author_node, event_id);
CREATE INDEX ticket_events_by_id ON ticket_events (event_id);
