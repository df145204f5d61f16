-- Tracking keys (DESIGN.md §11), SQLite dialect: the citizen follows a ticket
-- by its reference and a 128-bit key given at creation. Only the key's
-- sha256 is kept, so the database alone does not let anyone follow a ticket.
CREATE TABLE tracking_keys (
    ticket_id  TEXT PRIMARY KEY,
    key_sha256 TEXT NOT NULL
) WITHOUT ROWID;
