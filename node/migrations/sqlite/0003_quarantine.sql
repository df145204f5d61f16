-- Peers this node has quarantined (DESIGN.md §4): refused at the gate, held
-- in the outbox, their relayed events held back. Reversible: deleting the
-- row releases the peer.
CREATE TABLE quarantine (
    node     TEXT PRIMARY KEY,
    reason   TEXT NOT NULL,
    since_ms INTEGER NOT NULL
) WITHOUT ROWID;
