//! `resume` after a reconnect: `session_state` (the snapshot as REST shows it, and `has_more`),
//! then the stored messages with `seq > last_seq`, in order, at most `RESUME_PAGE` of them, as
//! `chat_message` frames (the server's own as `system_message`), to the resuming socket only. A phone back from a long absence pages
//! through with further `resume`s instead of getting a burst its socket queue cannot hold.
//! Read-only.

use super::batch::ChatBatch;
use super::stored::StoredMessage;
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use serde_json::Value;
use shared::frames::Event;
use sqlx::PgConnection;
use uuid::Uuid;

/// Messages one `resume` answers with at most (contract section 4).
pub const RESUME_PAGE: i64 = 200;

/// What a `resume` frame asks for.
pub struct Page {
    pub session_id: Uuid,
    pub last_seq: Option<Value>,
}

pub async fn handle(
    tx: &mut PgConnection,
    batch: &mut ChatBatch,
    sender: &Sender,
    page: Page,
    presence: &async_nats::jetstream::kv::Store,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let Page {
        session_id,
        last_seq,
    } = page;
    let (row, role) = batch.participant(session_id, sender)?;
    let last_seq = match last_seq {
        None | Some(Value::Null) => 0,
        Some(value) => match value.as_i64() {
            Some(seq) if seq >= 0 => seq,
            _ => {
                return Err(FrameError::refused(
                    "last_seq must be a non-negative integer",
                    Some(session_id),
                ));
            }
        },
    };
    // Messages earlier in this batch are part of what the client missed.
    batch.flush(tx).await?;
    let mut missed = sqlx::query_as::<_, StoredMessage>(crate::stored_message_select!(
        "WHERE session_id = $1 AND seq > $2 AND (expires_at IS NULL OR expires_at > now())
         ORDER BY seq LIMIT $3"
    ))
    .bind(session_id)
    .bind(last_seq)
    .bind(RESUME_PAGE + 1)
    .fetch_all(&mut *tx)
    .await?;
    let has_more = missed.len() as i64 > RESUME_PAGE;
    missed.truncate(RESUME_PAGE as usize);
    outbox.to_socket(
        &sender.user_id,
        &sender.conn_id,
        &Event::SessionState {
            snapshot: row.snapshot_with_presence(role, presence).await,
            has_more,
        },
    );
    for message in missed {
        outbox.to_socket(&sender.user_id, &sender.conn_id, &message.event_for(role));
    }
    Ok(())
}
