-- Which Ollama server answered (ollama.backends' name; `default` for ollama.service) and every backend
-- tried, in order: more than one when a backend failed before answering and the next one took over.
ALTER TABLE audit_requests ADD COLUMN backend text;
ALTER TABLE audit_requests ADD COLUMN attempts jsonb;
