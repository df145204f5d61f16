-- Identities refused whatever certificate they present (coordinators whose
-- certificates were revoked). Members are refused by their status instead.
CREATE TABLE revoked_identities (
    identity      TEXT PRIMARY KEY,     -- urn:urpnet:...
    reason        TEXT NOT NULL,
    revoked_at_ms BIGINT NOT NULL,
    revoked_by    TEXT NOT NULL
);
