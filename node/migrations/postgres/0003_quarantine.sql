-- Peers this node has quarantined (DESIGN.md §4). See the SQLite twin.
CREATE TABLE quarantine (
    node     TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    since_ms BIGINT NOT NULL
);
