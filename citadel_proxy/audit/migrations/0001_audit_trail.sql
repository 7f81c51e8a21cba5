-- The audit trail: conversations, one row per API call, and the messages of each call's new turn.
-- Append-only by design: the runtime role needs INSERT and SELECT only (see the docs snippet).

CREATE TABLE conversations (
    id          uuid PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    key_name    text,
    model       text NOT NULL
);
CREATE INDEX conversations_started_idx ON conversations (started_at DESC, id DESC);
CREATE INDEX conversations_key_started_idx ON conversations (key_name, started_at DESC, id DESC);

CREATE TABLE audit_requests (
    id                uuid PRIMARY KEY,
    created_at        timestamptz NOT NULL,
    conversation_id   uuid REFERENCES conversations (id),
    route             text NOT NULL,
    pipeline          text NOT NULL,
    stream            boolean NOT NULL,
    model_requested   text NOT NULL,
    model             text NOT NULL,
    key_name          text,
    client_addr       text,
    status            smallint NOT NULL,
    error_code        text,
    ttft_ms           double precision CHECK (ttft_ms >= 0),
    duration_ms       double precision NOT NULL CHECK (duration_ms >= 0),
    prompt_tokens     integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cache_hit         boolean NOT NULL DEFAULT false,
    content_mode      text NOT NULL CHECK (content_mode IN ('full', 'hashed', 'none')),
    -- true: every string of this row and its messages had '\' doubled and NUL written as '\0'
    -- (PostgreSQL text and jsonb cannot hold NUL); readers undo it.
    nul_escaped       boolean NOT NULL DEFAULT false,
    request           jsonb NOT NULL,
    response          jsonb
);
CREATE INDEX audit_requests_created_idx ON audit_requests (created_at);
CREATE INDEX audit_requests_model_created_idx ON audit_requests (model, created_at);
CREATE INDEX audit_requests_key_created_idx ON audit_requests (key_name, created_at);
CREATE INDEX audit_requests_conversation_idx ON audit_requests (conversation_id, created_at);

CREATE TABLE messages (
    request_id      uuid NOT NULL REFERENCES audit_requests (id),
    position        integer NOT NULL CHECK (position >= 0),
    conversation_id uuid REFERENCES conversations (id),
    created_at      timestamptz NOT NULL,
    role            text NOT NULL,
    content         text,
    content_sha256  text,
    content_bytes   integer NOT NULL CHECK (content_bytes >= 0),
    truncated       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (request_id, position)
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at, request_id, position);
