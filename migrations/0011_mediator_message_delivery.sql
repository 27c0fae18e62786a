-- Re-sends cover everything addressed to the user (contract section 12).

-- A mediator's message is addressed to both parties, each on their own devices, but it has one
-- delivery_status (which the parties' unread counts read): once one party's phone acknowledged it,
-- the other party's re-send on connect would skip it. Each party's own delivery is kept here
-- (a receipt or a read of theirs sets it); other messages have one recipient and leave these NULL.
ALTER TABLE chat_messages
    ADD COLUMN seeker_delivered_at   TIMESTAMPTZ,
    ADD COLUMN provider_delivered_at TIMESTAMPTZ;
-- Before this, one party's receipt stood for both: what was delivered stays delivered to both.
UPDATE chat_messages SET seeker_delivered_at = delivered_at, provider_delivered_at = delivered_at
WHERE sender_type = 'mediator' AND delivered_at IS NOT NULL;
-- The mediator's messages some party has not got yet, per session: the re-send looks them up, and
-- every messages_read of a party marks theirs, without reading the session's whole chat.
CREATE INDEX chat_messages_mediator_undelivered ON chat_messages (session_id, seq)
    WHERE sender_type = 'mediator' AND (seeker_delivered_at IS NULL OR provider_delivered_at IS NULL);

-- A party's disputed sessions (ended ones included: their chat goes on), found by an index probe
-- on every connection, as the live ones are by work_sessions_live_by_<role>.
CREATE INDEX work_sessions_disputed_by_seeker ON work_sessions (seeker_id) WHERE dispute_id IS NOT NULL;
CREATE INDEX work_sessions_disputed_by_provider ON work_sessions (provider_id) WHERE dispute_id IS NOT NULL;
