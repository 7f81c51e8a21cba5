-- The specification's model catalogue, and per-model daily statistics for dashboards.

CREATE TABLE llm_metadata (
    model_name   text PRIMARY KEY,
    description  text NOT NULL DEFAULT '',
    quantization text NOT NULL DEFAULT '',
    size_gb      numeric(8, 2) CHECK (size_gb >= 0),
    status       text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'retired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW model_daily_stats AS
SELECT
    date_trunc('day', created_at AT TIME ZONE 'UTC') AS day_utc,
    model,
    count(*) AS requests,
    count(*) FILTER (WHERE status >= 400) AS errors,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms
FROM audit_requests
GROUP BY 1, 2;
