//! `message_delivered` / `message_read` from the recipient: the status only moves forward
//! (sent -> delivered -> read; read implies delivered), and each change gives the sender's sockets
//! one `message_status_update`. Repeats and late `delivered`s are ignored silently. For anyone but
//! the recipient the message does not exist.

use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use shared::auth::Role;
use shared::frames::{Event, errors};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Sent,
    Delivered,
    Read,
}

impl Status {
    fn parse(value: &str) -> Status {
        match value {
            "read" => Status::Read,
            "delivered" => Status::Delivered,
            _ => Status::Sent,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
        }
    }
}

#[derive(FromRow)]
struct Target {
    session_id: Uuid,
    sender_type: String,
    sender_id: String,
    delivery_status: String,
    seeker_id: String,
    provider_id: String,
    connection_state: String,
}

pub async fn handle(
    tx: &mut PgConnection,
    sender: &Sender,
    message_id: Uuid,
    session_id: Option<Uuid>,
    wanted: Status,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let target = sqlx::query_as::<_, Target>(
        "SELECT m.session_id, m.sender_type, m.sender_id, m.delivery_status,
                s.seeker_id, s.provider_id, s.connection_state
         FROM chat_messages m JOIN work_sessions s ON s.session_id = m.session_id
         WHERE m.message_id = $1 FOR UPDATE OF m",
    )
    .bind(message_id)
    .fetch_optional(&mut *tx)
    .await?;
    let not_found = || FrameError::refused(errors::MESSAGE_NOT_FOUND, session_id);
    let Some(target) = target else {
        return Err(not_found());
    };
    let recipient_role = match target.sender_type.as_str() {
        "seeker" => Role::Provider,
        _ => Role::Seeker,
    };
    let recipient_id = match recipient_role {
        Role::Seeker => &target.seeker_id,
        Role::Provider => &target.provider_id,
    };
    let is_recipient = sender.role == recipient_role && &sender.user_id == recipient_id;
    if !is_recipient || session_id.is_some_and(|id| id != target.session_id) {
        return Err(not_found());
    }
    if !matches!(target.connection_state.as_str(), "waiting" | "active") {
        return Err(FrameError::refused(
            errors::SESSION_ENDED,
            Some(target.session_id),
        ));
    }
    if Status::parse(&target.delivery_status) >= wanted {
        return Ok(());
    }
    let timestamp: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "UPDATE chat_messages SET delivery_status = $2,
             delivered_at = COALESCE(delivered_at, now()),
             read_at = CASE WHEN $2 = 'read' THEN now() ELSE read_at END
         WHERE message_id = $1 RETURNING now()",
    )
    .bind(message_id)
    .bind(wanted.as_str())
    .fetch_one(&mut *tx)
    .await?;
    outbox.to_user(
        &target.sender_id,
        &Event::MessageStatusUpdate {
            message_id,
            session_id: target.session_id,
            status: wanted.as_str().to_owned(),
            timestamp: shared::time::rfc3339(timestamp),
        },
    );
    Ok(())
}
