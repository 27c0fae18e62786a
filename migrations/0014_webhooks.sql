-- Webhooks for offline users (contract section 13): a durable outbox the notify worker delivers.
--
-- webhook_events: one row per event, written in the transaction of the change that causes it (a
-- work order, an answer, an expiry, an arrival, an end, a dispute), so a crash between the change
-- and the webhook loses nothing. `message.unread` is derived instead, by the notify worker's
-- sweep of committed messages (below), so the chat path writes no row per message.
-- `webhook_id` is the Standard Webhooks id: unique per event, the same on every retry and URL.
CREATE TABLE webhook_events (
    webhook_id  TEXT PRIMARY KEY DEFAULT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    event_type  TEXT NOT NULL,
    -- The recipient; NULL for `dispute.opened` (to the mediators, no presence check).
    user_id     TEXT,
    role        TEXT NOT NULL CHECK (role IN ('seeker', 'provider', 'mediator')),
    -- The request body's `data` (user_id and role included), as it will be sent.
    data        JSONB NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- new: not looked at yet; queued: one delivery per URL exists; skipped: the recipient was
    -- online when it fired, or no URL is configured (skipped_reason says which).
    state          TEXT NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'queued', 'skipped')),
    skipped_reason TEXT
);
-- The notify worker's fan-out takes the new events, oldest first; the index holds only those.
CREATE INDEX webhook_events_new ON webhook_events (occurred_at) WHERE state = 'new';
-- Old rows are purged by age.
CREATE INDEX webhook_events_age ON webhook_events (occurred_at);

-- One row per event and URL: the delivery's attempts and outcome. `next_attempt_at` is also the
-- claim: an instance that takes a row moves it `WEBHOOK_CLAIM_SECS` ahead (longer than the
-- request timeout) in the same statement, so no other instance takes it meanwhile, and a row
-- whose instance died comes due again by itself (its outcome unknown: sent again, same id).
CREATE TABLE webhook_deliveries (
    webhook_id      TEXT NOT NULL REFERENCES webhook_events (webhook_id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- NULL while pending.
    outcome         TEXT CHECK (outcome IN ('delivered', 'given_up')),
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    PRIMARY KEY (webhook_id, url)
);
-- Claims take the pending rows that are due, earliest first; the index holds only pending rows.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at) WHERE outcome IS NULL;

-- `message.unread`: the parties' messages not yet delivered, by age. The sweep reads only the
-- slice that came due since its last pass; the chat path pays one small index entry per message,
-- which its receipt's update (already not HOT: `chat_messages_unread` reads delivery_status)
-- takes out of the predicate, so the index holds only what is undelivered now.
CREATE INDEX chat_messages_undelivered_by_age ON chat_messages (created_at)
    WHERE delivery_status = 'sent' AND sender_type IN ('seeker', 'provider');

-- Per recipient and session: the newest message seq a `message.unread` covered (or that was
-- skipped because the recipient was online), when the last one was sent (the coalescing window),
-- and whether a message came due inside the window (`held`: the sweep looks at it again when
-- the window ends).
CREATE TABLE webhook_unread_marks (
    session_id    UUID NOT NULL REFERENCES work_sessions (session_id) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role IN ('seeker', 'provider')),
    announced_seq BIGINT NOT NULL DEFAULT 0,
    last_sent_at  TIMESTAMPTZ,
    held          BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (session_id, role)
);
CREATE INDEX webhook_unread_marks_held ON webhook_unread_marks (last_sent_at) WHERE held;

-- How far the `message.unread` sweep has read `chat_messages` (by `created_at`). Its row lock
-- is also the sweep's mutual exclusion: one notify instance sweeps at a time, the others skip.
CREATE TABLE webhook_sweeps (
    name     TEXT PRIMARY KEY,
    swept_to TIMESTAMPTZ NOT NULL
);
INSERT INTO webhook_sweeps (name, swept_to) VALUES ('message.unread', now());
