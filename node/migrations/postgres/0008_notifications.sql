-- Notices to citizens (DESIGN.md §15), PostgreSQL dialect: one row per change
-- a citizen asked to hear about (a status change or a public note on a ticket
-- this node is the origin of), written in the same transaction as the event.
-- No personal data: the recipient is read from citizen_contacts when sending,
-- so an erased contact is never written to again.
CREATE TABLE notifications (
    id            BIGSERIAL PRIMARY KEY,
    ticket_id     TEXT NOT NULL,
    -- `<author>/<event id>` of the change; one notice per change.
    event_key     TEXT NOT NULL UNIQUE,
    -- Channels still to try (1 e-mail, 2 webhook), sent, and given up.
    pending_mask  BIGINT NOT NULL,
    sent_mask     BIGINT NOT NULL DEFAULT 0,
    failed_mask   BIGINT NOT NULL DEFAULT 0,
    attempts      BIGINT NOT NULL DEFAULT 0,
    not_before_ms BIGINT NOT NULL,
    last_error    TEXT NOT NULL DEFAULT '',
    created_ms    BIGINT NOT NULL,
    done_ms       BIGINT
);
CREATE INDEX notifications_due ON notifications (pending_mask, not_before_ms);
