//! `resume` after a reconnect: `session_state` (the snapshot as REST shows it, and `has_more`),
//! then the stored messages with `seq > last_seq`, in order, as `chat_message` frames (the
//! server's own as `system_message`), to the resuming socket only. One answer is one page
//! (`page.rs`): at most 200 messages and 256 KiB of event JSON, `session_state` included, with
//! `has_more` when either cut it short. A phone back from a long absence pages through with
//! further `resume`s instead of getting a burst its socket queue cannot hold. Read-only.

use super::batch::ChatBatch;
use super::page::{self as paging, PAGE_BYTES, PAGE_MESSAGES};
use super::stored::StoredMessage;
use crate::outbox::{Delivery, Outbox};
use crate::runtime::{FrameError, Sender};
use serde_json::Value;
use shared::frames::Event;
use sqlx::PgConnection;
use uuid::Uuid;

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
    let snapshot = row.snapshot_with_presence(role, presence).await;
    // The page's budget leaves room for its `session_state` (measured saying `false`, the
    // longer of the two answers).
    let state_length = Event::SessionState {
        snapshot: snapshot.clone(),
        has_more: false,
    }
    .to_json()
    .len();
    let budget = page_budget(state_length);
    let mut answer = paging::Page::with_byte_budget(budget);
    // One row more than a page holds tells whether there is more.
    let candidates = sqlx::query_as::<_, StoredMessage>(crate::bounded_page!(
        "$4",
        crate::stored_message_select!(
            "WHERE session_id = $1 AND seq > $2 AND (expires_at IS NULL OR expires_at > now())
             ORDER BY seq LIMIT $3"
        )
    ))
    .bind(session_id)
    .bind(last_seq)
    .bind(PAGE_MESSAGES as i64 + 1)
    .bind(i64::try_from(budget).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    for message in candidates {
        let delivery =
            Delivery::to_socket(&sender.user_id, &sender.conn_id, &message.event_for(role));
        if !answer.offer(delivery) {
            break;
        }
    }
    outbox.to_socket(
        &sender.user_id,
        &sender.conn_id,
        &Event::SessionState {
            snapshot,
            has_more: answer.cut_short(),
        },
    );
    for delivery in answer.into_deliveries() {
        outbox.push(delivery);
    }
    Ok(())
}

/// The bytes of messages a page with a `session_state` of `state_length` bytes may hold.
fn page_budget(state_length: usize) -> usize {
    PAGE_BYTES.saturating_sub(state_length)
}
