//! `cancel_connection` from either party: the session becomes `cancelled`, the order `cancelled`,
//! chat messages start their retention countdown, the provider is active and the seeker searching
//! again; both get `connection_cancelled`, then the gateway closes both parties' sockets (1000).

use super::search_status::{set_provider_active, set_seeker_searching};
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use crate::session;
use shared::frames::Event;
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

pub async fn handle(
    tx: &mut PgConnection,
    sender: &Sender,
    session_id: Uuid,
    chat_retention: Duration,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let (row, role) =
        session::participant(session::load_for_update(tx, session_id).await?, sender)?;
    session::require_live(&row)?;
    if !role.is_party() {
        return Err(FrameError::refused(
            shared::frames::errors::SESSION_NOT_FOUND,
            Some(session_id),
        ));
    }
    sqlx::query(
        "UPDATE work_sessions SET connection_state = 'cancelled', cancelled_by = $2, cancelled_at = now()
         WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(role.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE work_orders SET status = 'cancelled' WHERE work_id = $1")
        .bind(row.work_id)
        .execute(&mut *tx)
        .await?;
    // The party who did not end it hears of it, if offline (contract section 13).
    crate::webhook_events::session_ended(
        tx,
        (row.user_of(role.other()), role.other()),
        session_id,
        row.work_id,
        "cancelled",
    )
    .await?;
    let participants: Vec<&str> = row.participants().into_iter().map(|(_, id)| id).collect();
    crate::system_messages::write(
        tx,
        session_id,
        &crate::system_messages::session_cancelled(role),
        &participants,
        outbox,
    )
    .await?;
    super::finish_service::start_chat_expiry(tx, session_id, chat_retention).await?;
    set_provider_active(tx, &row.provider_id, true).await?;
    set_seeker_searching(tx, &row.seeker_id, true).await?;
    let cancelled = |message: String| Event::ConnectionCancelled {
        session_id,
        cancelled_by: role,
        message,
        timestamp: shared::time::now(),
    };
    outbox.to_user_then_close(
        row.user_of(role),
        &cancelled(String::from("Connection cancelled successfully")),
    );
    outbox.session_ended(&session_id);
    outbox.to_user_then_close(
        row.user_of(role.other()),
        &cancelled(format!("{} cancelled the connection", role.title())),
    );
    Ok(())
}
