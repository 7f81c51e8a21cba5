-- Requests refused before their pipeline ran (bad or missing key, bad body, unknown model, too large,
-- unavailable, too many failed authentications): metadata only, one row per client, reason, route and
-- key per aggregation interval (audit.refusal_interval_s), with how many and when the first and last came.

CREATE TABLE audit_refusals (
    id          uuid PRIMARY KEY,
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    count       integer NOT NULL CHECK (count >= 1),
    client_addr text,
    route       text NOT NULL,
    status      smallint NOT NULL,
    reason      text NOT NULL,
    key_name    text,
    request_id  text NOT NULL DEFAULT '',
    CHECK (last_at >= first_at)
);
CREATE INDEX audit_refusals_first_idx ON audit_refusals (first_at);
CREATE INDEX audit_refusals_client_first_idx ON audit_refusals (client_addr, first_at);
