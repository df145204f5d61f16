-- The anonymised archive (DESIGN.md §7). Each row is one closed contact as a
-- node anonymised it: no free text, no personal data, no link to a ticket
-- (`id` is a keyed hash only the making node can compute). `seq` is the order
-- of arrival, the cursor of upward replication; ingest is serialised, so a
-- higher seq is always committed after a lower one.
CREATE TABLE archive_records (
    seq             INTEGER PRIMARY KEY,
    id              BLOB NOT NULL UNIQUE,
    source          TEXT NOT NULL,      -- the member that sent it
    category        TEXT NOT NULL,
    channel         INTEGER NOT NULL,
    territory       TEXT NOT NULL,      -- comune, comune/district or region
    province        TEXT NOT NULL,      -- '' for a region-level record
    region          TEXT NOT NULL,
    week            INTEGER NOT NULL,   -- ISO week YYYYWW
    outcome         INTEGER NOT NULL,
    handling        INTEGER NOT NULL,
    handoffs        INTEGER NOT NULL,
    overflow        INTEGER NOT NULL,
    origin_level    INTEGER NOT NULL,
    competent_level INTEGER NOT NULL,
    received_ms     INTEGER NOT NULL
);
CREATE INDEX archive_records_week ON archive_records (week);

-- Rollup for trends and the queries that group only by category, territory
-- and week: one row per (week, category, territory), maintained by ingest in
-- the same transaction as the records.
CREATE TABLE archive_weekly (
    week      INTEGER NOT NULL,
    category  TEXT NOT NULL,
    territory TEXT NOT NULL,
    province  TEXT NOT NULL,
    region    TEXT NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (week, category, territory)
) WITHOUT ROWID;

-- The same counts by province: what national and regional trends read (a
-- few thousand rows a week for the whole country, whatever the archive's
-- size). Region-level records have province ''.
CREATE TABLE archive_weekly_province (
    week     INTEGER NOT NULL,
    category TEXT NOT NULL,
    region   TEXT NOT NULL,
    province TEXT NOT NULL,
    n        INTEGER NOT NULL,
    PRIMARY KEY (week, category, region, province)
) WITHOUT ROWID;

-- Per sender: records stored and when its last batch came.
CREATE TABLE archive_sources (
    member           TEXT PRIMARY KEY,
    records          INTEGER NOT NULL,
    last_received_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Upward replication: the highest seq the national registry acknowledged.
CREATE TABLE archive_upstream (
    name   TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    sent   INTEGER NOT NULL
) WITHOUT ROWID;
