-- Which Ollama server answered and every backend tried, in order, as PostgreSQL's 0006_backend_attempts:
-- the attempts as JSON text.
ALTER TABLE audit_requests ADD COLUMN backend TEXT;
ALTER TABLE audit_requests ADD COLUMN attempts TEXT;
