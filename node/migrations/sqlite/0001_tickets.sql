-- urpnet node schema, SQLite dialect. Tables keyed by text ids are WITHOUT
-- ROWID: the key is the table, one b-tree fewer to write per row. Integers are INTEGER here and BIGINT in
-- the PostgreSQL twin so both decode as i64; times are Unix milliseconds.

-- Materialised state of each ticket: the fold of its events (DESIGN.md §3),
-- kept for queries. `state` is the encoded urpnet.v1.Ticket; the other columns
-- are copies of its fields for filtering.
CREATE TABLE tickets (
    id            TEXT PRIMARY KEY,
    reference     TEXT NOT NULL UNIQUE,
    origin_node   TEXT NOT NULL,
    owner_node    TEXT NOT NULL,
    category      TEXT NOT NULL,
    channel       INTEGER NOT NULL,
    status        INTEGER NOT NULL,
    priority      INTEGER NOT NULL,
    office        TEXT NOT NULL,
    istat_code    TEXT NOT NULL,
    province_code TEXT NOT NULL,
    region_code   TEXT NOT NULL,
    latitude      REAL,
    longitude     REAL,
    search_text   TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    state         BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX tickets_status ON tickets (status, id);
CREATE INDEX tickets_updated ON tickets (updated_ms);
CREATE INDEX tickets_istat ON tickets (istat_code);

-- The append-only event log. `envelope` is the encoded urpnet.v1.Signed whose
-- payload is the event: kept byte for byte as signed.
CREATE TABLE ticket_events (
    event_id    TEXT PRIMARY KEY,
    ticket_id   TEXT NOT NULL,
    hlc_wall    INTEGER NOT NULL,
    hlc_logical INTEGER NOT NULL,
    author_node TEXT NOT NULL,
    envelope    BLOB NOT NULL,
    received_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX ticket_events_by_ticket ON ticket_events (ticket_id, hlc_wall, hlc_logical);

-- Citizens' personal data: only at the origin node, never in an event.
CREATE TABLE citizen_contacts (
    ticket_id   TEXT PRIMARY KEY,
    full_name   TEXT NOT NULL,
    email       TEXT NOT NULL,
    phone       TEXT NOT NULL,
    fiscal_code TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- Idempotency of CreateTicket: `request_key` is `<actor>:<request_id>`,
-- `fingerprint` the sha256 of the request, so a retry returns the same ticket
-- and a reuse with different content is refused.
CREATE TABLE create_requests (
    request_key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    ticket_id   TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- Attachments held here; content lives in data_dir/attachments by sha256.
CREATE TABLE attachments (
    sha256     TEXT PRIMARY KEY,
    file_name  TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Desk credentials. Only the sha256 of each bearer token is kept.
CREATE TABLE operators (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_ms   INTEGER NOT NULL,
    revoked_ms   INTEGER
);
