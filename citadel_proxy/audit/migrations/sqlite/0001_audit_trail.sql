-- The embedded audit store: the PostgreSQL trail's tables, in SQLite's types.
-- Times are UTC ISO 8601 text of fixed width (2026-03-01T12:00:00.000000Z), so text order is time order;
-- ids are lowercase canonical UUID text, whose text order is PostgreSQL's uuid order.

CREATE TABLE conversations (
    id          TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    key_name    TEXT,
    model       TEXT NOT NULL
);
CREATE INDEX conversations_started_idx ON conversations (started_at DESC, id DESC);
CREATE INDEX conversations_key_started_idx ON conversations (key_name, started_at DESC, id DESC);

CREATE TABLE audit_requests (
    id                TEXT PRIMARY KEY,
    created_at        TEXT NOT NULL,
    conversation_id   TEXT REFERENCES conversations (id),
    route             TEXT NOT NULL,
    pipeline          TEXT NOT NULL,
    stream            INTEGER NOT NULL,
    model_requested   TEXT NOT NULL,
    model             TEXT NOT NULL,
    key_name          TEXT,
    client_addr       TEXT,
    status            INTEGER NOT NULL,
    error_code        TEXT,
    ttft_ms           REAL CHECK (ttft_ms >= 0),
    duration_ms       REAL NOT NULL CHECK (duration_ms >= 0),
    prompt_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cache_hit         INTEGER NOT NULL DEFAULT 0,
    content_mode      TEXT NOT NULL CHECK (content_mode IN ('full', 'hashed', 'none')),
    -- JSON text (SQLite text holds NUL, so nothing is escaped here).
    request           TEXT NOT NULL,
    response          TEXT
);
CREATE INDEX audit_requests_created_idx ON audit_requests (created_at);
CREATE INDEX audit_requests_model_created_idx ON audit_requests (model, created_at);
CREATE INDEX audit_requests_key_created_idx ON audit_requests (key_name, created_at);
CREATE INDEX audit_requests_conversation_idx ON audit_requests (conversation_id, created_at);

CREATE TABLE messages (
    request_id      TEXT NOT NULL REFERENCES audit_requests (id),
    position        INTEGER NOT NULL CHECK (position >= 0),
    conversation_id TEXT REFERENCES conversations (id),
    created_at      TEXT NOT NULL,
    role            TEXT NOT NULL,
    content         TEXT,
    content_sha256  TEXT,
    content_bytes   INTEGER NOT NULL CHECK (content_bytes >= 0),
    truncated       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (request_id, position)
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at, request_id, position);
