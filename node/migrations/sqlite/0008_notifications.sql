-- Notices to citizens (DESIGN.md §15), SQLite dialect: one row per change a
-- citizen asked to hear about (a status change or a public note on a ticket
-- this node is the origin of), written in the same transaction as the event.
-- No personal data: the recipient is read from citizen_contacts when sending,
-- so an erased contact is never written to again.
CREATE TABLE notifications (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id     TEXT NOT NULL,
    -- `<author>/<event id>` of the change; one notice per change.
    event_key     TEXT NOT NULL UNIQUE,
    -- Channels still to try (1 e-mail, 2 webhook), sent, and given up.
    pending_mask  INTEGER NOT NULL,
    sent_mask     INTEGER NOT NULL DEFAULT 0,
    failed_mask   INTEGER NOT NULL DEFAULT 0,
    attempts      INTEGER NOT NULL DEFAULT 0,
    not_before_ms INTEGER NOT NULL,
    last_error    TEXT NOT NULL DEFAULT '',
    created_ms    INTEGER NOT NULL,
    done_ms       INTEGER
);
CREATE INDEX notifications_due ON notifications (pending_mask, not_before_ms);
