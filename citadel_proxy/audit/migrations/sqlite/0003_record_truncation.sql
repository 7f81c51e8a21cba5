-- What a record left out to stay within audit.max_record_messages and max_record_bytes (null: nothing),
-- as PostgreSQL's 0003_record_truncation: JSON text.
ALTER TABLE audit_requests ADD COLUMN truncation TEXT;
