//! `user.<id>.connected`: a socket opened (or a gateway's NATS connection came back and it
//! announced its sockets again). Events travel over core NATS and can be lost in a blip, so the
//! new socket gets again every `chat_message` addressed to the user in a live session that is not
//! yet marked delivered: oldest first, at most `REPLAY_PER_SESSION` per session, same `message_id`
//! (clients drop what they already have). Core NATS in the chat queue group; read-only.

use super::stored::StoredMessage;
use crate::connections::{self, Connected};
use crate::outbox::{Delivery, publish};
use shared::auth::Role;
use shared::subjects::queue;
use sqlx::PgPool;

/// Messages re-sent per session at most (contract section 7); `resume` pages through the rest.
const REPLAY_PER_SESSION: i64 = 200;

pub async fn serve(nats: async_nats::Client, pool: PgPool) -> anyhow::Result<()> {
    connections::serve(nats.clone(), queue::CHAT, move |connected: Connected| {
        let (nats, pool) = (nats.clone(), pool.clone());
        async move {
            if let Err(error) = replay(&nats, &pool, &connected).await {
                tracing::warn!(%error, user_id = %connected.user_id, "cannot re-send undelivered messages");
            }
        }
    })
    .await
}

async fn replay(
    nats: &async_nats::Client,
    pool: &PgPool,
    connected: &Connected,
) -> Result<(), sqlx::Error> {
    let Connected {
        user_id,
        role,
        conn_id,
        ..
    } = connected;
    let (user_id, role, conn_id) = (user_id.as_str(), *role, conn_id.as_str());
    // The other party wrote them; the live-session indexes find the user's sessions.
    let query = match role {
        // A mediator reads the chat by `resume` and history; receipts are not theirs.
        Role::Mediator => return Ok(()),
        Role::Seeker => {
            "SELECT m.* FROM work_sessions s CROSS JOIN LATERAL (
                 SELECT message_id, session_id, seq, sender_type, message_text, delivery_status,
                        client_message_id, created_at, kind, latitude, longitude, url, file_name,
                        size_bytes, mime_type
                 FROM chat_messages
                 WHERE session_id = s.session_id AND sender_type = 'provider' AND delivery_status = 'sent'
                   AND (expires_at IS NULL OR expires_at > now())
                 ORDER BY seq LIMIT $2) m
             WHERE s.seeker_id = $1 AND s.connection_state IN ('waiting', 'active')
             ORDER BY m.session_id, m.seq"
        }
        Role::Provider => {
            "SELECT m.* FROM work_sessions s CROSS JOIN LATERAL (
                 SELECT message_id, session_id, seq, sender_type, message_text, delivery_status,
                        client_message_id, created_at, kind, latitude, longitude, url, file_name,
                        size_bytes, mime_type
                 FROM chat_messages
                 WHERE session_id = s.session_id AND sender_type = 'seeker' AND delivery_status = 'sent'
                   AND (expires_at IS NULL OR expires_at > now())
                 ORDER BY seq LIMIT $2) m
             WHERE s.provider_id = $1 AND s.connection_state IN ('waiting', 'active')
             ORDER BY m.session_id, m.seq"
        }
    };
    let undelivered = sqlx::query_as::<_, StoredMessage>(query)
        .bind(user_id)
        .bind(REPLAY_PER_SESSION)
        .fetch_all(pool)
        .await?;
    if undelivered.is_empty() {
        return Ok(());
    }
    let deliveries: Vec<Delivery> = undelivered
        .into_iter()
        .map(|message| Delivery::to_socket(user_id, conn_id, &message.event_for(role)))
        .collect();
    tracing::debug!(%user_id, messages = deliveries.len(), "re-sending undelivered messages");
    publish(nats, &deliveries, conn_id).await;
    Ok(())
}
