-- A message's conversation is its request's: the insert writes both from one value, the request's own
-- foreign key (audit_requests.conversation_id) holds that conversation in place, and a message's
-- request_id key holds the request. Checking the same conversation again, with a row lock, for every
-- message of every exchange was a measurable share of PostgreSQL's work per audited record (README,
-- Performance, has the figures). The column and its index stay, for the queries by conversation.
ALTER TABLE messages DROP CONSTRAINT messages_conversation_id_fkey;
