-- API keys: digests only. Run by citadel_proxy.auth.pgkeys.migrate under an advisory lock.
CREATE TABLE IF NOT EXISTS api_keys (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    prefix text NOT NULL,
    scopes text[] NOT NULL,
    requests_per_minute integer CHECK (requests_per_minute > 0),
    tokens_per_minute integer CHECK (tokens_per_minute > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    last_used timestamptz
);
-- A name belongs to one live key; a revoked key's name may be reused.
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
