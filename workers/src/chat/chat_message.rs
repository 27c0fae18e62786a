//! `chat_message`: stores the message with the session's next `seq`, then (after commit)
//! `message_sent` to every socket of the sender (with the text, for their other devices) and
//! `chat_message` to the other participants (the other party, and a joined mediator). A message before
//! `start_chat` starts the chat first. A resend with the same `client_message_id` stores nothing
//! new and answers the same `message_sent`. Sending clears the sender's typing indicator.
//! Anonymity: the events carry `sender_type` only. Kinds (contract section 9): `text` needs
//! `message`; `location` needs `latitude`/`longitude`; `image` and `file` need an `https://` `url`;
//! for those three, `message` is an optional caption.

use super::batch::ChatBatch;
use super::start_chat;
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use crate::session;
use serde_json::Value;
use shared::frames::{Content, Event, KindFields, MessageKind, errors};
use sqlx::PgConnection;
use uuid::Uuid;

const MAX_MESSAGE_CHARS: usize = 4000;
const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 64;
const MAX_URL_CHARS: usize = 2048;
const MAX_NAME_CHARS: usize = 255;

/// A `chat_message` frame's fields as the client sent them.
pub struct Draft {
    pub message: Option<Value>,
    pub client_message_id: Option<Value>,
    pub kind_fields: KindFields,
}

/// An optional text field: absent, or text without U+0000 of at most `max` characters.
fn optional_text(value: Option<Value>, field: &str, max: usize) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.contains('\0') => {
            Err(format!("{field} must not contain U+0000"))
        }
        Some(Value::String(text)) if text.chars().count() <= max => Ok(Some(text)),
        Some(_) => Err(format!("{field} must be text of at most {max} characters")),
    }
}

/// The message's text (empty for a kind without caption) and content, or why it is refused.
fn content_of(draft: Draft) -> Result<(String, Content), String> {
    let fields = draft.kind_fields;
    let kind = match fields.kind {
        None | Some(Value::Null) => MessageKind::Text,
        Some(Value::String(name)) => match MessageKind::parse(&name) {
            Some(kind) if kind != MessageKind::System => kind,
            _ => {
                return Err(String::from(
                    "kind must be one of text, location, image, file",
                ));
            }
        },
        Some(_) => {
            return Err(String::from(
                "kind must be one of text, location, image, file",
            ));
        }
    };
    let text = match (kind, draft.message) {
        (MessageKind::Text, Some(Value::String(text))) if !text.trim().is_empty() => text,
        (MessageKind::Text, Some(Value::String(_)) | None | Some(Value::Null)) => {
            return Err(String::from("message must not be empty"));
        }
        (_, None | Some(Value::Null)) => String::new(),
        (_, Some(Value::String(text))) => text,
        (_, Some(_)) => return Err(String::from("message must be text")),
    };
    if text.contains('\0') {
        return Err(String::from("message must not contain U+0000"));
    }
    if text.chars().count() > MAX_MESSAGE_CHARS {
        return Err(String::from("message is longer than 4000 characters"));
    }
    let mut content = Content {
        kind,
        ..Content::default()
    };
    match kind {
        MessageKind::Location => {
            let position = fields
                .latitude
                .as_ref()
                .and_then(Value::as_f64)
                .zip(fields.longitude.as_ref().and_then(Value::as_f64))
                .and_then(|(latitude, longitude)| shared::geo::Position::new(latitude, longitude));
            let Some(position) = position else {
                return Err(String::from(errors::INVALID_COORDINATES));
            };
            content.latitude = Some(position.latitude);
            content.longitude = Some(position.longitude);
        }
        MessageKind::Image | MessageKind::File => {
            let url = optional_text(fields.url, "url", MAX_URL_CHARS)
                .ok()
                .flatten()
                .filter(|url| {
                    url.len() > "https://".len()
                        && url
                            .get(..8)
                            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
                        && !url.chars().any(char::is_whitespace)
                });
            let Some(url) = url else {
                return Err(String::from(
                    "url is required: an https:// address of at most 2048 characters",
                ));
            };
            content.url = Some(url);
            content.name = optional_text(fields.name, "name", MAX_NAME_CHARS)?;
            content.mime_type = optional_text(fields.mime_type, "mime_type", MAX_NAME_CHARS)?;
            content.size_bytes = match fields.size_bytes {
                None | Some(Value::Null) => None,
                Some(value) => match value.as_i64() {
                    Some(size) if size >= 0 => Some(size),
                    _ => return Err(String::from("size_bytes must be a non-negative integer")),
                },
            };
        }
        MessageKind::Text | MessageKind::System => {}
    }
    Ok((text, content))
}

pub async fn handle(
    tx: &mut PgConnection,
    batch: &mut ChatBatch,
    sender: &Sender,
    session_id: Uuid,
    draft: Draft,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let (row, role) = batch.participant(session_id, sender)?;
    session::require_chat_open(&row)?;
    let refuse = |error: &str| FrameError::refused(error, Some(session_id));
    let client_message_id = draft.client_message_id.clone();
    let (text, content) = content_of(draft).map_err(|error| refuse(&error))?;
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
                content: None,
            },
        );
        return Ok(());
    }
    if row.state().is_live() && start_chat::start(tx, &row, outbox).await? {
        batch.chat_started(session_id);
    }
    let stored = batch.add_message(
        session_id,
        sender,
        role,
        client_message_id.clone(),
        text.clone(),
        content.clone(),
    )?;
    let others: Vec<String> = row.others(role).into_iter().map(str::to_owned).collect();
    batch.typing_clears.push((session_id, role, others.clone()));
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
            content: Some(content.clone()),
        },
    );
    let event = Event::ChatMessage {
        message_id: stored.message_id,
        session_id,
        sender_type: role,
        message: text,
        seq: stored.seq,
        delivery_status: String::from("sent"),
        timestamp,
        client_message_id: None,
        content,
    };
    for other in &others {
        outbox.to_user(other, &event);
    }
    Ok(())
}
