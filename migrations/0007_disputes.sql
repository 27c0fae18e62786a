-- Disputes and mediators (contract section 10).

CREATE TABLE disputes (
    dispute_id   UUID PRIMARY KEY,
    session_id   UUID NOT NULL REFERENCES work_sessions (session_id) ON DELETE CASCADE,
    status       TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'joined', 'resolved')),
    reason       TEXT NOT NULL,
    opened_by    TEXT NOT NULL CHECK (opened_by IN ('seeker', 'provider')),
    mediator_id  TEXT REFERENCES users (user_id),
    resolution   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    joined_at    TIMESTAMPTZ,
    resolved_at  TIMESTAMPTZ
);
-- At most one unresolved dispute per session; the second opening fails here even if two race.
CREATE UNIQUE INDEX disputes_one_unresolved_per_session ON disputes (session_id) WHERE status <> 'resolved';
-- A session's latest dispute, for the inbox.
CREATE INDEX disputes_by_session ON disputes (session_id, created_at DESC);
-- The mediators' queue: disputes by state, oldest first.
CREATE INDEX disputes_by_status ON disputes (status, created_at);

-- The session's unresolved dispute and its mediator, beside the session, so every frame's
-- session lookup knows who may write in the chat and whether it is writable after the end.
ALTER TABLE work_sessions ADD COLUMN dispute_id UUID;
ALTER TABLE work_sessions ADD COLUMN mediator_id TEXT;
CREATE INDEX work_sessions_inbox_by_mediator
    ON work_sessions (mediator_id, last_activity_at DESC, session_id DESC) WHERE mediator_id IS NOT NULL;
-- Presence: which sessions is a user part of, live or disputed.
CREATE INDEX work_sessions_disputed ON work_sessions (session_id) WHERE dispute_id IS NOT NULL;


-- Mediators are users too (their first authenticated call records them).
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_role_check;
ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('seeker', 'provider', 'mediator'));
