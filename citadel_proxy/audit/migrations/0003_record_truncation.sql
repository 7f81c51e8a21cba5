-- What a record left out to stay within audit.max_record_messages and max_record_bytes (null: nothing):
-- {"messages_omitted": n, "request_messages_omitted": n, "record_bytes": size before shortening}.
ALTER TABLE audit_requests ADD COLUMN truncation jsonb;
