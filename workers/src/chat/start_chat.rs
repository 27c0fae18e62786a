//! `start_chat`: marks the chat started (once) and sends `chat_ready` to both parties.
//! `chat_room_id` is the session id.

use super::batch::ChatBatch;
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use crate::session::{self, SessionRow};
use shared::auth::Role;
use shared::frames::Event;
use sqlx::PgConnection;
use uuid::Uuid;

pub async fn handle(
    tx: &mut PgConnection,
    batch: &mut ChatBatch,
    sender: &Sender,
    session_id: Uuid,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let (row, _) = batch.participant(session_id, sender)?;
    session::require_live(&row)?;
    if start(tx, &row, outbox).await? {
        batch.chat_started(session_id);
    } else {
        // Already started: this socket (a second device, a reconnect) still gets its answer.
        outbox.to_socket(&sender.user_id, &sender.conn_id, &ready(session_id));
    }
    Ok(())
}

fn ready(session_id: Uuid) -> Event {
    Event::ChatReady {
        session_id,
        chat_room_id: session_id,
        message: String::from("Chat started successfully"),
        timestamp: shared::time::now(),
    }
}

/// Starts the chat if it has not started: stamps `chat_started_at` and tells both parties.
/// Returns whether it started now.
pub async fn start(
    tx: &mut PgConnection,
    row: &SessionRow,
    outbox: &mut Outbox,
) -> Result<bool, sqlx::Error> {
    if row.chat_started_at.is_some() {
        return Ok(false);
    }
    sqlx::query("UPDATE work_sessions SET chat_started_at = now() WHERE session_id = $1")
        .bind(row.session_id)
        .execute(&mut *tx)
        .await?;
    let ready = ready(row.session_id);
    outbox.to_user(row.user_of(Role::Seeker), &ready);
    outbox.to_user(row.user_of(Role::Provider), &ready);
    Ok(true)
}
