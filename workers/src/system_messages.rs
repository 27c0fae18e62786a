//! Messages the server writes into a session's chat (contract section 9): when the session starts,
//! when it is cancelled or finished (and, with disputes, when one opens, a mediator joins, or it is
//! resolved; and, from the distance worker, when the provider arrives: section 14). They take the
//! session's next `seq` like any message (the caller holds the session's row lock, as a chat batch
//! does), are stored as read (they never count as unread or get re-sent), and reach every
//! participant as `system_message`.

use crate::outbox::Outbox;
use shared::frames::Event;
use sqlx::PgConnection;
use uuid::Uuid;

/// Writes `text` into the session's chat and queues `system_message` for each of `recipients`.
pub async fn write(
    tx: &mut PgConnection,
    session_id: Uuid,
    text: &str,
    recipients: &[&str],
    outbox: &mut Outbox,
) -> Result<(), sqlx::Error> {
    let message_id = Uuid::now_v7();
    // Postgres keeps microseconds: the event and the stored row say the same time.
    let created_at = chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
        .unwrap_or_else(chrono::Utc::now);
    let seq: i64 = sqlx::query_scalar(
        "WITH next AS (
             UPDATE work_sessions SET last_message_seq = last_message_seq + 1, last_activity_at = $4
             WHERE session_id = $1 RETURNING last_message_seq)
         INSERT INTO chat_messages
             (message_id, session_id, seq, sender_id, sender_type, message_text, delivery_status,
              delivered_at, read_at, kind, created_at)
         SELECT $2, $1, next.last_message_seq, '', 'system', $3, 'read', $4, $4, 'system', $4 FROM next
         RETURNING seq",
    )
    .bind(session_id)
    .bind(message_id)
    .bind(text)
    .bind(created_at)
    .fetch_one(&mut *tx)
    .await?;
    let event = Event::SystemMessage {
        session_id,
        message_id,
        seq,
        message: text.to_owned(),
        timestamp: shared::time::rfc3339(created_at),
    };
    for recipient in recipients {
        outbox.to_user(recipient, &event);
    }
    Ok(())
}

pub const SESSION_STARTED: &str = "The provider accepted the work order. Chat is now active.";

/// Written by the distance worker once per approach (contract section 14).
pub const PROVIDER_ARRIVED: &str = "The provider has arrived.";

pub fn session_cancelled(role: shared::auth::Role) -> String {
    format!("The {} cancelled the session.", role.as_str())
}

pub fn session_finished(role: shared::auth::Role) -> String {
    format!("The {} marked the service as finished.", role.as_str())
}
