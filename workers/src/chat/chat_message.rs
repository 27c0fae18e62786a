//! `chat_message`: stores the message with the session's next `seq`, then (after commit)
//! `message_sent` to the sending socket and `chat_message` to the other party. A message before
//! `start_chat` starts the chat first. A resend with the same `client_message_id` stores nothing
//! new and answers the same `message_sent`. Sending clears the sender's typing indicator.
//! Anonymity: the events carry `sender_type` only.

use super::start_chat;
use super::typing::Typing;
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use crate::session;
use serde_json::Value;
use shared::frames::Event;
use sqlx::{FromRow, PgConnection};
use std::sync::Arc;
use uuid::Uuid;

const MAX_MESSAGE_CHARS: usize = 4000;
const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 64;

#[derive(FromRow)]
struct Stored {
    message_id: Uuid,
    seq: i64,
    created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn handle(
    tx: &mut PgConnection,
    sender: &Sender,
    session_id: Uuid,
    message: Option<Value>,
    client_message_id: Option<Value>,
    typing: &Arc<Typing>,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let (row, role) =
        session::participant(session::load_for_update(tx, session_id).await?, sender)?;
    session::require_live(&row)?;
    let refuse = |error: &str| FrameError::refused(error, Some(session_id));
    let text = match message {
        Some(Value::String(text)) if !text.trim().is_empty() => text,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(refuse("message must not be empty"));
        }
        Some(_) => return Err(refuse("message must be text")),
    };
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(refuse("message is longer than 4000 characters"));
    }
    let client_message_id = match client_message_id {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.chars().count() <= MAX_CLIENT_MESSAGE_ID_CHARS => Some(id),
        Some(_) => {
            return Err(refuse(
                "client_message_id must be text of at most 64 characters",
            ));
        }
    };
    if let Some(client_id) = &client_message_id {
        let existing = sqlx::query_as::<_, Stored>(
            "SELECT message_id, seq, created_at FROM chat_messages
             WHERE session_id = $1 AND sender_type = $2 AND client_message_id = $3",
        )
        .bind(session_id)
        .bind(role.as_str())
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(existing) = existing {
            outbox.to_socket(
                &sender.user_id,
                &sender.conn_id,
                &Event::MessageSent {
                    message_id: existing.message_id,
                    session_id,
                    seq: existing.seq,
                    client_message_id: Some(client_id.clone()),
                    timestamp: shared::time::rfc3339(existing.created_at),
                },
            );
            return Ok(());
        }
    }
    start_chat::start(tx, &row, outbox).await?;
    // One round trip: take the session's next seq (the row is already locked) and store the row.
    let message_id = Uuid::now_v7();
    let stored = sqlx::query_as::<_, Stored>(
        "WITH next AS (
             UPDATE work_sessions SET last_message_seq = last_message_seq + 1 WHERE session_id = $2
             RETURNING last_message_seq)
         INSERT INTO chat_messages (message_id, session_id, seq, sender_id, sender_type, client_message_id, message_text)
         SELECT $1, $2, next.last_message_seq, $3, $4, $5, $6 FROM next
         RETURNING message_id, seq, created_at",
    )
    .bind(message_id)
    .bind(session_id)
    .bind(&sender.user_id)
    .bind(role.as_str())
    .bind(&client_message_id)
    .bind(&text)
    .fetch_one(&mut *tx)
    .await?;
    let seq = stored.seq;
    let timestamp = shared::time::rfc3339(stored.created_at);
    // Clearing the typist's indicator takes a KV round trip: done beside the transaction, not in
    // its path (if the message is refused after all, the indicator was cleared anyway: harmless).
    typing.clear_in_background(session_id, role, row.user_of(role.other()).to_owned());
    outbox.to_socket(
        &sender.user_id,
        &sender.conn_id,
        &Event::MessageSent {
            message_id,
            session_id,
            seq,
            client_message_id,
            timestamp: timestamp.clone(),
        },
    );
    outbox.to_user(
        row.user_of(role.other()),
        &Event::ChatMessage {
            message_id,
            session_id,
            sender_type: role,
            message: text,
            seq,
            delivery_status: String::from("sent"),
            timestamp,
            client_message_id: None,
        },
    );
    Ok(())
}
