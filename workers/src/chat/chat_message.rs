//! `chat_message`: stores the message with the session's next `seq`, then (after commit)
//! `message_sent` to every socket of the sender (with the text, for their other devices) and
//! `chat_message` to the other party. A message before
//! `start_chat` starts the chat first. A resend with the same `client_message_id` stores nothing
//! new and answers the same `message_sent`. Sending clears the sender's typing indicator.
//! Anonymity: the events carry `sender_type` only.

use super::batch::ChatBatch;
use super::start_chat;
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use crate::session;
use serde_json::Value;
use shared::frames::Event;
use sqlx::PgConnection;
use uuid::Uuid;

const MAX_MESSAGE_CHARS: usize = 4000;
const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 64;

pub async fn handle(
    tx: &mut PgConnection,
    batch: &mut ChatBatch,
    sender: &Sender,
    session_id: Uuid,
    message: Option<Value>,
    client_message_id: Option<Value>,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let (row, role) = batch.participant(session_id, sender)?;
    session::require_live(&row)?;
    let refuse = |error: &str| FrameError::refused(error, Some(session_id));
    let text = match message {
        Some(Value::String(text)) if !text.trim().is_empty() => text,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(refuse("message must not be empty"));
        }
        Some(_) => return Err(refuse("message must be text")),
    };
    if text.contains('\0') {
        return Err(refuse("message must not contain U+0000"));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(refuse("message is longer than 4000 characters"));
    }
    let client_message_id = match client_message_id {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) if id.contains('\0') => {
            return Err(refuse("client_message_id must not contain U+0000"));
        }
        Some(Value::String(id)) if id.chars().count() <= MAX_CLIENT_MESSAGE_ID_CHARS => Some(id),
        Some(_) => {
            return Err(refuse(
                "client_message_id must be text of at most 64 characters",
            ));
        }
    };
    if let Some(client_id) = &client_message_id
        && let Some(existing) = batch.resent(session_id, role, client_id)
    {
        outbox.to_socket(
            &sender.user_id,
            &sender.conn_id,
            &Event::MessageSent {
                message_id: existing.message_id,
                session_id,
                seq: existing.seq,
                client_message_id: Some(client_id.clone()),
                timestamp: shared::time::rfc3339(existing.created_at),
                sender_type: None,
                message: None,
            },
        );
        return Ok(());
    }
    if start_chat::start(tx, &row, outbox).await? {
        batch.chat_started(session_id);
    }
    let stored = batch.add_message(
        session_id,
        sender,
        role,
        client_message_id.clone(),
        text.clone(),
    )?;
    let other = row.user_of(role.other()).to_owned();
    batch.typing_clears.push((session_id, role, other.clone()));
    let timestamp = shared::time::rfc3339(stored.created_at);
    // Every socket of the sender: their other devices show the message too.
    outbox.to_user(
        &sender.user_id,
        &Event::MessageSent {
            message_id: stored.message_id,
            session_id,
            seq: stored.seq,
            client_message_id,
            timestamp: timestamp.clone(),
            sender_type: Some(role),
            message: Some(text.clone()),
        },
    );
    outbox.to_user(
        &other,
        &Event::ChatMessage {
            message_id: stored.message_id,
            session_id,
            sender_type: role,
            message: text,
            seq: stored.seq,
            delivery_status: String::from("sent"),
            timestamp,
            client_message_id: None,
        },
    );
    Ok(())
}
