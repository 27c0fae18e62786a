-- Conversations (contract section 9): message kinds, system messages, read-up-to, the inbox.

-- Kinds: text (the default), location, image, file; and system messages the server writes.
ALTER TABLE chat_messages DROP CONSTRAINT IF EXISTS chat_messages_sender_type_check;
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_sender_type_check
    CHECK (sender_type IN ('seeker', 'provider', 'mediator', 'system'));
ALTER TABLE chat_messages
    ADD COLUMN kind       TEXT NOT NULL DEFAULT 'text'
                          CHECK (kind IN ('text', 'location', 'image', 'file', 'system')),
    ADD COLUMN latitude   DOUBLE PRECISION,
    ADD COLUMN longitude  DOUBLE PRECISION,
    ADD COLUMN url        TEXT,
    ADD COLUMN file_name  TEXT,
    ADD COLUMN size_bytes BIGINT,
    ADD COLUMN mime_type  TEXT;

-- The inbox lists a user's sessions by their latest activity (a message, the start).
ALTER TABLE work_sessions ADD COLUMN last_activity_at TIMESTAMPTZ;
UPDATE work_sessions SET last_activity_at = COALESCE(
    (SELECT max(created_at) FROM chat_messages m WHERE m.session_id = work_sessions.session_id),
    created_at);
ALTER TABLE work_sessions ALTER COLUMN last_activity_at SET NOT NULL,
                          ALTER COLUMN last_activity_at SET DEFAULT now();
-- When its chat expires (set at the end): ended sessions stay in the inbox until then.
ALTER TABLE work_sessions ADD COLUMN chat_expires_at TIMESTAMPTZ;

-- One index scan per side of the inbox, newest first, however many sessions a user had.
CREATE INDEX work_sessions_inbox_by_seeker
    ON work_sessions (seeker_id, last_activity_at DESC, session_id DESC);
CREATE INDEX work_sessions_inbox_by_provider
    ON work_sessions (provider_id, last_activity_at DESC, session_id DESC);
-- Unread counts: the messages not yet read, per session, are few.
CREATE INDEX chat_messages_unread ON chat_messages (session_id, sender_type)
    WHERE delivery_status <> 'read';
