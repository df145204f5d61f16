-- Appointments (DESIGN.md §13), SQLite dialect. This body's calendars only:
-- nothing here is replicated.

-- How each service is booked at each office (the plan, as JSON: hours,
-- slot rules, capacity, change rules, channels).
CREATE TABLE appointment_plans (
    office_id  TEXT NOT NULL,
    service_id TEXT NOT NULL,
    plan       TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (office_id, service_id)
) WITHOUT ROWID;

-- One row per booking. Personal data (names, address, e-mail, phone) is
-- held here, at the body holding the calendar, and nowhere else; it is
-- emptied when the citizen's data is erased or its retention ends.
CREATE TABLE appointments (
    id              TEXT PRIMARY KEY,
    office_id       TEXT NOT NULL,
    service_id      TEXT NOT NULL,
    channel         TEXT NOT NULL,
    start_ms        INTEGER NOT NULL,
    end_ms          INTEGER NOT NULL,
    status          TEXT NOT NULL,
    sequence        INTEGER NOT NULL DEFAULT 0,
    moves           INTEGER NOT NULL DEFAULT 0,
    ticket_id       TEXT NOT NULL DEFAULT '',
    -- sha256 hex of the current manage token (a move replaces it).
    manage_sha256   TEXT NOT NULL UNIQUE,
    -- `<caller scope>:<key>`: one booking per key.
    idempotency_key TEXT NOT NULL UNIQUE,
    -- sha256 of the request a key was first used with.
    request_sha256  TEXT NOT NULL,
    room            TEXT NOT NULL DEFAULT '',
    booked_by       TEXT NOT NULL,
    given_name      TEXT NOT NULL,
    family_name     TEXT NOT NULL,
    address         TEXT NOT NULL,
    email           TEXT NOT NULL,
    phone           TEXT NOT NULL,
    notes           TEXT NOT NULL DEFAULT '',
    -- sha256 of the lower-cased e-mail and the Italian day of booking,
    -- for the per-e-mail daily limit.
    email_day       TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL
);
CREATE INDEX appointments_agenda ON appointments (office_id, start_ms);
CREATE INDEX appointments_email_day ON appointments (email_day);
CREATE INDEX appointments_unlinked ON appointments (ticket_id);

-- Seats: the capacity of a slot is the number of seat numbers its plan
-- allows (0..capacity), and a seat is taken by inserting its row, so two
-- bookings can never hold the same seat. A hold is a seat with an expiry.
CREATE TABLE appointment_seats (
    office_id       TEXT NOT NULL,
    service_id      TEXT NOT NULL,
    start_ms        INTEGER NOT NULL,
    seat            INTEGER NOT NULL,
    -- The appointment, or `hold:<id>` for a hold.
    holder          TEXT NOT NULL,
    -- NULL for a booking; when the hold lapses otherwise.
    hold_expires_ms INTEGER,
    PRIMARY KEY (office_id, service_id, start_ms, seat)
) WITHOUT ROWID;
CREATE INDEX appointment_seats_holder ON appointment_seats (holder);

-- Documents the citizen sent for an appointment (content under the
-- attachments' blob directory, metadata stripped from photos).
CREATE TABLE appointment_documents (
    appointment_id TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    file_name      TEXT NOT NULL,
    media_type     TEXT NOT NULL,
    size           INTEGER NOT NULL,
    received_ms    INTEGER NOT NULL,
    PRIMARY KEY (appointment_id, sha256)
) WITHOUT ROWID;

-- The durable queue of the citizen's messages: confirmation, update,
-- cancellation and reminders. A reminder made for one sequence is skipped
-- once the appointment has moved on.
CREATE TABLE appointment_messages (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    appointment_id TEXT NOT NULL,
    kind           TEXT NOT NULL,
    sequence       INTEGER NOT NULL,
    pending_mask   INTEGER NOT NULL,
    sent_mask      INTEGER NOT NULL DEFAULT 0,
    failed_mask    INTEGER NOT NULL DEFAULT 0,
    attempts       INTEGER NOT NULL DEFAULT 0,
    not_before_ms  INTEGER NOT NULL,
    last_error     TEXT NOT NULL DEFAULT '',
    created_ms     INTEGER NOT NULL,
    UNIQUE (appointment_id, kind, sequence, not_before_ms)
);
CREATE INDEX appointment_messages_due ON appointment_messages (pending_mask, not_before_ms);
