//! Reading a work session and checking who may act on it, shared by every worker that handles
//! session frames. A session that does not exist and one the sender is not part of give the same
//! error, so session ids cannot be probed.

use crate::runtime::{FrameError, Sender};
use shared::auth::Role;
use shared::frames::{SessionSnapshot, errors};
use shared::geo;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    Waiting,
    Active,
    Cancelled,
    Completed,
}

impl SessionState {
    pub fn parse(value: &str) -> SessionState {
        match value {
            "waiting" => SessionState::Waiting,
            "active" => SessionState::Active,
            "cancelled" => SessionState::Cancelled,
            _ => SessionState::Completed,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            SessionState::Waiting => "waiting",
            SessionState::Active => "active",
            SessionState::Cancelled => "cancelled",
            SessionState::Completed => "completed",
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, SessionState::Waiting | SessionState::Active)
    }
}

#[derive(Clone, Debug, FromRow)]
pub struct SessionRow {
    pub session_id: Uuid,
    pub work_id: i64,
    pub seeker_id: String,
    pub provider_id: String,
    pub connection_state: String,
    pub current_distance_meters: Option<f64>,
    pub seeker_selected_mediums: Option<serde_json::Value>,
    pub provider_selected_mediums: Option<serde_json::Value>,
    pub chat_started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_message_seq: i64,
    pub cancelled_by: Option<String>,
    pub completed_by: Option<String>,
    pub rating_stars: Option<i16>,
    pub rating_description: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The session's unresolved dispute, if any (contract section 10).
    pub dispute_id: Option<Uuid>,
    /// The mediator who joined that dispute, until it is resolved.
    pub mediator_id: Option<String>,
}

macro_rules! session_select {
    ($tail:literal) => {
        concat!(
            "SELECT session_id, work_id, seeker_id, provider_id, connection_state, \
             current_distance_meters, seeker_selected_mediums, provider_selected_mediums, \
             chat_started_at, last_message_seq, cancelled_by, completed_by, rating_stars, \
             rating_description, created_at, dispute_id, mediator_id FROM work_sessions ",
            $tail
        )
    };
}

impl SessionRow {
    pub fn state(&self) -> SessionState {
        SessionState::parse(&self.connection_state)
    }

    /// The role `user_id` plays in this session, if any (a mediator only while their dispute is
    /// unresolved).
    pub fn role_of(&self, user_id: &str, claimed: Role) -> Option<Role> {
        let id = match claimed {
            Role::Seeker => &self.seeker_id,
            Role::Provider => &self.provider_id,
            Role::Mediator => self.mediator_id.as_ref()?,
        };
        (id == user_id).then_some(claimed)
    }

    /// The user of a role; a session without a mediator answers "" for the mediator (nobody).
    pub fn user_of(&self, role: Role) -> &str {
        match role {
            Role::Seeker => &self.seeker_id,
            Role::Provider => &self.provider_id,
            Role::Mediator => self.mediator_id.as_deref().unwrap_or_default(),
        }
    }

    /// Every participant of the chat: both parties, and the mediator while a dispute is joined.
    pub fn participants(&self) -> Vec<(Role, &str)> {
        let mut participants = vec![
            (Role::Seeker, self.seeker_id.as_str()),
            (Role::Provider, self.provider_id.as_str()),
        ];
        if let Some(mediator_id) = &self.mediator_id {
            participants.push((Role::Mediator, mediator_id.as_str()));
        }
        participants
    }

    /// The participants other than `role` (who hear what `role` says).
    pub fn others(&self, role: Role) -> Vec<&str> {
        self.participants()
            .into_iter()
            .filter(|(other, _)| *other != role)
            .map(|(_, user_id)| user_id)
            .collect()
    }

    /// Whether the chat takes messages: while the session is live, and while a dispute is
    /// unresolved even after the end (contract section 10).
    pub fn chat_open(&self) -> bool {
        self.state().is_live() || self.dispute_id.is_some()
    }

    /// The snapshot as `viewer` may see it, with who is online (from the presence bucket).
    pub async fn snapshot_with_presence(
        &self,
        viewer: Role,
        presence: &async_nats::jetstream::kv::Store,
    ) -> SessionSnapshot {
        let mut snapshot = self.snapshot(viewer);
        let mediator = match &self.mediator_id {
            Some(mediator_id) => {
                Some(crate::lifecycle::presence::is_online(presence, mediator_id).await)
            }
            None => None,
        };
        snapshot.presence = shared::frames::Presence {
            seeker: crate::lifecycle::presence::is_online(presence, &self.seeker_id).await,
            provider: crate::lifecycle::presence::is_online(presence, &self.provider_id).await,
            mediator,
        };
        snapshot
    }

    /// The snapshot as `viewer` may see it (the rating only for the seeker; the parties' mediums,
    /// phone numbers, never for a mediator: contract section 12).
    pub fn snapshot(&self, viewer: Role) -> SessionSnapshot {
        let seeker_view = viewer == Role::Seeker;
        let party_view = viewer != Role::Mediator;
        let mediums = |selected: &Option<serde_json::Value>| {
            selected
                .clone()
                .filter(|_| party_view)
                .unwrap_or(serde_json::Value::Null)
        };
        SessionSnapshot {
            session_id: self.session_id,
            work_id: self.work_id,
            connection_state: self.connection_state.clone(),
            distance_meters: self.current_distance_meters,
            distance_formatted: self.current_distance_meters.map(geo::format_away),
            seeker_mediums: mediums(&self.seeker_selected_mediums),
            provider_mediums: mediums(&self.provider_selected_mediums),
            chat_started_at: self.chat_started_at.map(shared::time::rfc3339),
            cancelled_by: self.cancelled_by.clone(),
            completed_by: self.completed_by.clone(),
            created_at: shared::time::rfc3339(self.created_at),
            rating_stars: seeker_view.then_some(self.rating_stars),
            rating_description: seeker_view.then(|| self.rating_description.clone()),
            last_seq: self.last_message_seq,
            presence: shared::frames::Presence {
                mediator: self.mediator_id.as_ref().map(|_| false),
                ..shared::frames::Presence::default()
            },
        }
    }
}

/// Loads a session without locking it.
pub async fn load(
    tx: &mut PgConnection,
    session_id: Uuid,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as::<_, SessionRow>(session_select!("WHERE session_id = $1"))
        .bind(session_id)
        .fetch_optional(tx)
        .await
}

/// Loads and locks a session for the rest of the transaction: frames that change a session are
/// applied one at a time. The lock is `FOR NO KEY UPDATE` (what an `UPDATE` of non-key columns
/// takes anyway): it excludes every other writer of the session, but not the `FOR KEY SHARE` lock
/// that a row referring to the session takes while it is inserted (a chat message, a dispute, the
/// notify worker's `webhook_unread_marks`), so such an insert in another transaction never holds
/// up the chat path, nor deadlocks with it.
pub async fn load_for_update(
    tx: &mut PgConnection,
    session_id: Uuid,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query_as::<_, SessionRow>(session_select!("WHERE session_id = $1 FOR NO KEY UPDATE"))
        .bind(session_id)
        .fetch_optional(tx)
        .await
}

/// Loads and locks several sessions (in id order, so concurrent batches never deadlock), as
/// [`load_for_update`] does.
pub async fn load_many_for_update(
    tx: &mut PgConnection,
    session_ids: &[Uuid],
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as::<_, SessionRow>(session_select!(
        "WHERE session_id = ANY($1) ORDER BY session_id FOR NO KEY UPDATE"
    ))
    .bind(session_ids)
    .fetch_all(tx)
    .await
}

/// The session, if `sender` is part of it; "session not found" otherwise.
pub fn participant(
    row: Option<SessionRow>,
    sender: &Sender,
) -> Result<(SessionRow, Role), FrameError> {
    let session_id = row.as_ref().map(|row| row.session_id);
    match row {
        Some(row) => match row.role_of(&sender.user_id, sender.role) {
            Some(role) => Ok((row, role)),
            None => Err(FrameError::refused(errors::SESSION_NOT_FOUND, session_id)),
        },
        None => Err(FrameError::refused(errors::SESSION_NOT_FOUND, None)),
    }
}

/// Refuses chat on a session that ended, unless a dispute keeps its chat open.
pub fn require_chat_open(row: &SessionRow) -> Result<(), FrameError> {
    if row.chat_open() {
        Ok(())
    } else {
        Err(FrameError::refused(
            errors::SESSION_ENDED,
            Some(row.session_id),
        ))
    }
}

/// Refuses actions on a session that has ended.
pub fn require_live(row: &SessionRow) -> Result<(), FrameError> {
    if row.state().is_live() {
        Ok(())
    } else {
        Err(FrameError::refused(
            errors::SESSION_ENDED,
            Some(row.session_id),
        ))
    }
}
