-- Requests refused before their pipeline ran (as PostgreSQL's 0005_audit_refusals): metadata only, one
-- row per client, reason, route and key per aggregation interval, with the count and first and last time.
CREATE TABLE audit_refusals (
    id          TEXT PRIMARY KEY,
    first_at    TEXT NOT NULL,
    last_at     TEXT NOT NULL,
    count       INTEGER NOT NULL CHECK (count >= 1),
    client_addr TEXT,
    route       TEXT NOT NULL,
    status      INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    key_name    TEXT,
    request_id  TEXT NOT NULL DEFAULT '',
    CHECK (last_at >= first_at)
);
CREATE INDEX audit_refusals_first_idx ON audit_refusals (first_at);
CREATE INDEX audit_refusals_client_first_idx ON audit_refusals (client_addr, first_at);
