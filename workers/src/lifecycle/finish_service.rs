//! `finish_service` from either party: the first one completes the session and the order; a
//! seeker may add a private rating (1-5 stars, a description), which a provider's frame cannot
//! set. Search statuses stay off. Both get `service_finished`, then both parties' sockets close.

use super::text;
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use crate::session;
use serde_json::Value;
use shared::auth::Role;
use shared::frames::{Event, errors};
use sqlx::PgConnection;
use std::time::Duration;
use uuid::Uuid;

/// The rating fields as sent, validated only when the sender is the seeker.
pub struct Rating {
    stars: Option<Value>,
    description: Option<Value>,
}

const MAX_DESCRIPTION_CHARS: usize = 2000;

impl Rating {
    pub fn from_frame(stars: Option<Value>, description: Option<Value>) -> Rating {
        Rating { stars, description }
    }

    fn validate(self, session_id: Uuid) -> Result<(Option<i16>, Option<String>), FrameError> {
        let stars = match self.stars {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_i64() {
                Some(stars @ 1..=5) => Some(stars as i16),
                _ => {
                    return Err(FrameError::refused(
                        errors::INVALID_RATING,
                        Some(session_id),
                    ));
                }
            },
        };
        let description = match self.description {
            None | Some(Value::Null) => None,
            Some(Value::String(description))
                if description.chars().count() <= MAX_DESCRIPTION_CHARS =>
            {
                // Postgres would refuse the update; the seeker must hear which field.
                text::refuse_nul("rating_description", Some(&description))
                    .map_err(|error| FrameError::refused(error, Some(session_id)))?;
                Some(description)
            }
            Some(_) => {
                return Err(FrameError::refused(
                    "rating_description must be text of at most 2000 characters",
                    Some(session_id),
                ));
            }
        };
        Ok((stars, description))
    }
}

pub async fn handle(
    tx: &mut PgConnection,
    sender: &Sender,
    session_id: Uuid,
    rating: Rating,
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
    let (stars, description) = match role {
        Role::Seeker => rating.validate(session_id)?,
        Role::Provider | Role::Mediator => (None, None),
    };
    sqlx::query(
        "UPDATE work_sessions SET connection_state = 'completed', completed_by = $2, completed_at = now(),
             rating_stars = $3, rating_description = $4,
             rated_at = CASE WHEN $3::smallint IS NOT NULL OR $4::text IS NOT NULL THEN now() END
         WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(role.as_str())
    .bind(stars)
    .bind(description)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE work_orders SET status = 'completed' WHERE work_id = $1")
        .bind(row.work_id)
        .execute(&mut *tx)
        .await?;
    // The party who did not end it hears of it, if offline (contract section 13).
    crate::webhook_events::session_ended(
        tx,
        (row.user_of(role.other()), role.other()),
        session_id,
        row.work_id,
        "completed",
    )
    .await?;
    let participants: Vec<&str> = row.participants().into_iter().map(|(_, id)| id).collect();
    crate::system_messages::write(
        tx,
        session_id,
        &crate::system_messages::session_finished(role),
        &participants,
        outbox,
    )
    .await?;
    start_chat_expiry(tx, session_id, chat_retention).await?;
    let finished = |message: String| Event::ServiceFinished {
        session_id,
        finished_by: role,
        message,
        timestamp: shared::time::now(),
    };
    outbox.to_user_then_close(
        row.user_of(role),
        &finished(String::from("Service marked as finished successfully")),
    );
    outbox.session_ended(&session_id);
    outbox.to_user_then_close(
        row.user_of(role.other()),
        &finished(format!("{} marked the service as finished", role.title())),
    );
    Ok(())
}

/// Messages of an ended session expire `chat_retention` after the end; the expiry worker
/// deletes them, and the inbox stops listing the session then.
pub async fn start_chat_expiry(
    tx: &mut PgConnection,
    session_id: Uuid,
    chat_retention: Duration,
) -> Result<(), sqlx::Error> {
    // An unresolved dispute keeps the chat: its resolution starts the countdown instead.
    sqlx::query(
        "WITH session AS (
             UPDATE work_sessions SET chat_expires_at = now() + make_interval(secs => $2)
             WHERE session_id = $1 AND dispute_id IS NULL RETURNING session_id)
         UPDATE chat_messages SET expires_at = now() + make_interval(secs => $2)
         WHERE session_id IN (SELECT session_id FROM session)",
    )
    .bind(session_id)
    .bind(chat_retention.as_secs_f64())
    .execute(tx)
    .await?;
    Ok(())
}
