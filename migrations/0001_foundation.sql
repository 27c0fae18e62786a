-- Users, profiles and search statuses, work orders and sessions, chat messages, and the record of
-- handled inbound frames that makes JetStream redelivery harmless.

CREATE TABLE users (
    user_id     TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('seeker', 'provider')),
    token_name  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE profiles (
    user_id     TEXT PRIMARY KEY REFERENCES users (user_id),
    name        TEXT NOT NULL,
    mobile      TEXT NOT NULL,
    profile_pic TEXT,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE provider_status (
    user_id     TEXT PRIMARY KEY REFERENCES users (user_id),
    is_active   BOOLEAN NOT NULL DEFAULT false,
    latitude    DOUBLE PRECISION,
    longitude   DOUBLE PRECISION,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE seeker_search (
    user_id      TEXT PRIMARY KEY REFERENCES users (user_id),
    is_searching BOOLEAN NOT NULL DEFAULT false,
    latitude     DOUBLE PRECISION,
    longitude    DOUBLE PRECISION,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE work_orders (
    work_id      BIGSERIAL PRIMARY KEY,
    seeker_id    TEXT NOT NULL REFERENCES users (user_id),
    provider_id  TEXT NOT NULL REFERENCES users (user_id),
    service_type TEXT NOT NULL,
    message      TEXT,
    latitude     DOUBLE PRECISION NOT NULL,
    longitude    DOUBLE PRECISION NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'accepted', 'rejected', 'cancelled', 'completed')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    responded_at TIMESTAMPTZ
);
-- A provider's pending orders are replayed each time they connect.
CREATE INDEX work_orders_pending_by_provider ON work_orders (provider_id, work_id) WHERE status = 'pending';

CREATE TABLE work_sessions (
    session_id                    UUID PRIMARY KEY,
    work_id                       BIGINT NOT NULL UNIQUE REFERENCES work_orders (work_id),
    seeker_id                     TEXT NOT NULL REFERENCES users (user_id),
    provider_id                   TEXT NOT NULL REFERENCES users (user_id),
    connection_state              TEXT NOT NULL DEFAULT 'waiting'
                                  CHECK (connection_state IN ('waiting', 'active', 'cancelled', 'completed')),
    seeker_latitude               DOUBLE PRECISION,
    seeker_longitude              DOUBLE PRECISION,
    seeker_last_location_update   TIMESTAMPTZ,
    provider_latitude             DOUBLE PRECISION,
    provider_longitude            DOUBLE PRECISION,
    provider_last_location_update TIMESTAMPTZ,
    current_distance_meters       DOUBLE PRECISION,
    last_distance_update          TIMESTAMPTZ,
    seeker_selected_mediums       JSONB,
    provider_selected_mediums     JSONB,
    mediums_shared_at             TIMESTAMPTZ,
    chat_started_at               TIMESTAMPTZ,
    last_message_seq              BIGINT NOT NULL DEFAULT 0,
    cancelled_by                  TEXT CHECK (cancelled_by IN ('seeker', 'provider')),
    cancelled_at                  TIMESTAMPTZ,
    completed_by                  TEXT CHECK (completed_by IN ('seeker', 'provider')),
    completed_at                  TIMESTAMPTZ,
    rating_stars                  SMALLINT CHECK (rating_stars BETWEEN 1 AND 5),
    rating_description            TEXT,
    rated_at                      TIMESTAMPTZ,
    created_at                    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- "Is this seeker already in a live session?" on every new work order.
CREATE INDEX work_sessions_live_by_seeker ON work_sessions (seeker_id) WHERE connection_state IN ('waiting', 'active');
CREATE INDEX work_sessions_live_by_provider ON work_sessions (provider_id) WHERE connection_state IN ('waiting', 'active');

CREATE TABLE chat_messages (
    message_id        UUID PRIMARY KEY,
    session_id        UUID NOT NULL REFERENCES work_sessions (session_id) ON DELETE CASCADE,
    seq               BIGINT NOT NULL,
    sender_id         TEXT NOT NULL,
    sender_type       TEXT NOT NULL CHECK (sender_type IN ('seeker', 'provider')),
    client_message_id TEXT,
    message_text      TEXT NOT NULL,
    delivery_status   TEXT NOT NULL DEFAULT 'sent' CHECK (delivery_status IN ('sent', 'delivered', 'read')),
    delivered_at      TIMESTAMPTZ,
    read_at           TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at        TIMESTAMPTZ,
    UNIQUE (session_id, seq)
);
-- A resend with the same client_message_id finds the stored message.
CREATE UNIQUE INDEX chat_messages_client_id ON chat_messages (session_id, sender_type, client_message_id)
    WHERE client_message_id IS NOT NULL;
-- The expiry sweep deletes in batches by expiry time.
CREATE INDEX chat_messages_expiry ON chat_messages (expires_at) WHERE expires_at IS NOT NULL;

-- One row per inbound JetStream frame whose effects committed (key: the gateway's Nats-Msg-Id), with
-- the events it produced, so a redelivery republishes them instead of acting twice.
CREATE TABLE handled_frames (
    frame_id   TEXT PRIMARY KEY,
    events     JSONB NOT NULL,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX handled_frames_age ON handled_frames (handled_at);

-- Per sending socket, the last chat frame number applied, so that two chat instances keep a
-- sender's messages in the order they were sent (see workers/src/chat/ordering.rs).
CREATE TABLE chat_send_cursors (
    conn_id    TEXT PRIMARY KEY,
    last_frame BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
