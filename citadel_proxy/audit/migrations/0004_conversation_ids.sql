-- Conversation ids are the client's own (voice agents' and chat apps' session ids: 1 to 128 characters
-- of A-Z a-z 0-9 . _ : -) or UUIDs in their canonical form, so they are text. Rewrites the three tables.
ALTER TABLE audit_requests DROP CONSTRAINT audit_requests_conversation_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_conversation_id_fkey;
ALTER TABLE conversations ALTER COLUMN id TYPE text USING id::text;
ALTER TABLE audit_requests ALTER COLUMN conversation_id TYPE text USING conversation_id::text;
ALTER TABLE messages ALTER COLUMN conversation_id TYPE text USING conversation_id::text;
ALTER TABLE conversations ADD CONSTRAINT conversations_id_format CHECK (id ~ '^[A-Za-z0-9._:-]{1,128}$');
ALTER TABLE audit_requests ADD CONSTRAINT audit_requests_conversation_id_fkey
    FOREIGN KEY (conversation_id) REFERENCES conversations (id);
ALTER TABLE messages ADD CONSTRAINT messages_conversation_id_fkey
    FOREIGN KEY (conversation_id) REFERENCES conversations (id);
