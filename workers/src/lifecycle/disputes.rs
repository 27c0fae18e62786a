//! Disputes and mediators (contract section 10), over REST:
//! - `POST /api/sessions/{id}/dispute {reason}`: a party opens one on a live session, or an ended
//!   one whose chat has not expired; its messages stop expiring until it is resolved.
//! - `GET /api/disputes?status=open|joined|resolved` (mediators) and `GET /api/disputes/{id}` (the
//!   session's parties and its mediator).
//! - `POST /api/disputes/{id}/join` (mediators): the first becomes a participant of the chat.
//! - `POST /api/disputes/{id}/resolve {resolution}` (its mediator): the mediator leaves the chat,
//!   and an ended session's messages expire `CHAT_RETENTION_SECS` from now.
//!
//! Each step writes a system message into the chat. The session row carries the unresolved
//! dispute and its mediator (`work_sessions.dispute_id`, `mediator_id`), so every frame's session
//! lookup knows who may write and whether the chat is open; changes are made under the session's
//! row lock, like the chat worker's batches, and announced with `session.<id>.changed`.

use super::Lifecycle;
use crate::api_server::Caller;
use crate::outbox::{Outbox, publish};
use crate::session::{self, SessionRow};
use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::api::{ApiRequest, ApiResponse};
use shared::auth::Role;
use shared::rest::{Dispute, DisputeList};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

const MAX_TEXT_CHARS: usize = 1000;

#[derive(FromRow)]
struct Row {
    dispute_id: Uuid,
    session_id: Uuid,
    status: String,
    reason: String,
    opened_by: String,
    mediator_id: Option<String>,
    resolution: Option<String>,
    created_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
}

impl From<Row> for Dispute {
    fn from(row: Row) -> Dispute {
        Dispute {
            dispute_id: row.dispute_id,
            session_id: row.session_id,
            status: row.status,
            reason: row.reason,
            opened_by: row.opened_by,
            mediator_joined: row.mediator_id.is_some(),
            resolution: row.resolution,
            created_at: shared::time::rfc3339(row.created_at),
            resolved_at: row.resolved_at.map(shared::time::rfc3339),
        }
    }
}

/// The columns a [`Row`] reads, for `SELECT` and `RETURNING` alike.
macro_rules! dispute_columns {
    () => {
        "dispute_id, session_id, status, reason, opened_by, mediator_id, resolution, created_at, \
         resolved_at"
    };
}

macro_rules! dispute_select {
    ($tail:literal) => {
        concat!("SELECT ", dispute_columns!(), " FROM disputes ", $tail)
    };
}

/// A text field of 1..=1000 characters without U+0000, or the error naming it.
fn text_field(body: Option<&Value>, field: &str) -> Result<String, ApiResponse> {
    match body.and_then(|body| body.get(field)) {
        Some(Value::String(text)) if text.contains('\0') => Err(ApiResponse::error(
            422,
            &format!("{field} must not contain U+0000"),
        )),
        Some(Value::String(text))
            if !text.trim().is_empty() && text.chars().count() <= MAX_TEXT_CHARS =>
        {
            Ok(text.clone())
        }
        _ => Err(ApiResponse::error(
            422,
            &format!("{field} is required: text of 1 to 1000 characters"),
        )),
    }
}

async fn load(tx: &mut PgConnection, dispute_id: Uuid) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as::<_, Row>(dispute_select!("WHERE dispute_id = $1"))
        .bind(dispute_id)
        .fetch_optional(tx)
        .await
}

/// Commits, then publishes the events and the `session.<id>.changed` notice.
async fn finish(
    lifecycle: &Lifecycle,
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    session_id: Uuid,
    outbox: Outbox,
) -> Result<(), sqlx::Error> {
    tx.commit().await?;
    publish(&lifecycle.nats, &outbox.into_deliveries(), "").await;
    if let Err(error) = lifecycle
        .nats
        .publish(
            shared::subjects::session_changed(&session_id),
            bytes::Bytes::new(),
        )
        .await
    {
        tracing::warn!(%error, "cannot announce a session's new participants");
    }
    Ok(())
}

/// Writes a system message to every current participant of the session.
async fn tell_everyone(
    tx: &mut PgConnection,
    row: &SessionRow,
    text: &str,
    outbox: &mut Outbox,
) -> Result<(), sqlx::Error> {
    let recipients: Vec<&str> = row
        .participants()
        .into_iter()
        .map(|(_, user_id)| user_id)
        .collect();
    crate::system_messages::write(tx, row.session_id, text, &recipients, outbox).await
}

pub async fn open(
    lifecycle: &Lifecycle,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let Some(session_id) = request.uuid_id() else {
        return Ok(ApiResponse::not_found("session"));
    };
    let mut tx = lifecycle.pool.begin().await?;
    let row = session::load_for_update(&mut tx, session_id).await?;
    let Some(row) = row.filter(|row| {
        caller.role.is_party() && row.role_of(&caller.user_id, caller.role).is_some()
    }) else {
        return Ok(ApiResponse::not_found("session"));
    };
    let reason = match text_field(request.body.as_ref(), "reason") {
        Ok(reason) => reason,
        Err(refusal) => return Ok(refusal),
    };
    if row.dispute_id.is_some() {
        return Ok(ApiResponse::error(
            409,
            "a dispute is already open for this session",
        ));
    }
    let chat_expired: bool = sqlx::query_scalar(
        "SELECT chat_expires_at IS NOT NULL AND chat_expires_at <= now() FROM work_sessions
         WHERE session_id = $1",
    )
    .bind(session_id)
    .fetch_one(&mut *tx)
    .await?;
    if chat_expired {
        return Ok(ApiResponse::error(
            409,
            "the session's chat has expired: nothing is left to dispute",
        ));
    }
    let dispute_id = Uuid::now_v7();
    let created: Row = sqlx::query_as::<_, Row>(concat!(
        "INSERT INTO disputes (dispute_id, session_id, reason, opened_by) VALUES ($1, $2, $3, $4)
         RETURNING ",
        dispute_columns!()
    ))
    .bind(dispute_id)
    .bind(session_id)
    .bind(&reason)
    .bind(caller.role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    // The chat stays (and stays writable) while the dispute is unresolved.
    sqlx::query(
        "WITH session AS (
             UPDATE work_sessions SET dispute_id = $2, chat_expires_at = NULL WHERE session_id = $1)
         UPDATE chat_messages SET expires_at = NULL WHERE session_id = $1 AND expires_at IS NOT NULL",
    )
    .bind(session_id)
    .bind(dispute_id)
    .execute(&mut *tx)
    .await?;
    crate::webhook_events::dispute_opened(
        &mut tx,
        session_id,
        row.work_id,
        dispute_id,
        caller.role,
    )
    .await?;
    let mut outbox = Outbox::default();
    let text = format!(
        "The {} opened a dispute. A mediator from the platform will join this chat.",
        caller.role.as_str()
    );
    tell_everyone(&mut tx, &row, &text, &mut outbox).await?;
    finish(lifecycle, tx, session_id, outbox).await?;
    Ok(ApiResponse::with_status(201, Dispute::from(created)))
}

pub async fn list(
    lifecycle: &Lifecycle,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    if caller.role != Role::Mediator {
        return Ok(ApiResponse::error(403, "only mediators list disputes"));
    }
    let status = request
        .query
        .get("status")
        .map(String::as_str)
        .unwrap_or("open");
    if !matches!(status, "open" | "joined" | "resolved") {
        return Ok(ApiResponse::error(
            422,
            "status must be open, joined or resolved",
        ));
    }
    let rows = sqlx::query_as::<_, Row>(dispute_select!(
        "WHERE status = $1 ORDER BY created_at, dispute_id LIMIT 200"
    ))
    .bind(status)
    .fetch_all(&lifecycle.pool)
    .await?;
    let disputes: Vec<Dispute> = rows.into_iter().map(Dispute::from).collect();
    Ok(ApiResponse::ok(DisputeList { disputes }))
}

pub async fn get(
    lifecycle: &Lifecycle,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let Some(dispute_id) = request.uuid_id() else {
        return Ok(ApiResponse::not_found("dispute"));
    };
    let mut connection = lifecycle.pool.acquire().await?;
    let Some(dispute) = load(&mut connection, dispute_id).await? else {
        return Ok(ApiResponse::not_found("dispute"));
    };
    let allowed = match caller.role {
        Role::Mediator => dispute.mediator_id.as_deref() == Some(caller.user_id.as_str()),
        _ => session::load(&mut connection, dispute.session_id)
            .await?
            .is_some_and(|row| row.role_of(&caller.user_id, caller.role).is_some()),
    };
    if !allowed {
        return Ok(ApiResponse::not_found("dispute"));
    }
    Ok(ApiResponse::ok(Dispute::from(dispute)))
}

pub async fn join(
    lifecycle: &Lifecycle,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    if caller.role != Role::Mediator {
        return Ok(ApiResponse::error(403, "only mediators join disputes"));
    }
    let Some(dispute_id) = request.uuid_id() else {
        return Ok(ApiResponse::not_found("dispute"));
    };
    crate::users::record(
        &lifecycle.pool,
        &caller.user_id,
        caller.role,
        caller.name.as_deref(),
    )
    .await?;
    let mut tx = lifecycle.pool.begin().await?;
    let Some(dispute) = load(&mut tx, dispute_id).await? else {
        return Ok(ApiResponse::not_found("dispute"));
    };
    // The session's lock orders this with the chat's batches and with a racing join.
    let Some(row) = session::load_for_update(&mut tx, dispute.session_id).await? else {
        return Ok(ApiResponse::not_found("dispute"));
    };
    let joined: Option<Row> = sqlx::query_as::<_, Row>(concat!(
        "UPDATE disputes SET status = 'joined', mediator_id = $2, joined_at = now()
         WHERE dispute_id = $1 AND status = 'open'
         RETURNING ",
        dispute_columns!()
    ))
    .bind(dispute_id)
    .bind(&caller.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(joined) = joined else {
        return Ok(ApiResponse::error(
            409,
            "another mediator has joined this dispute, or it is resolved",
        ));
    };
    sqlx::query(
        "UPDATE work_sessions SET mediator_id = $2, mediator_read_seq = 0 WHERE session_id = $1",
    )
    .bind(row.session_id)
    .bind(&caller.user_id)
    .execute(&mut *tx)
    .await?;
    let with_mediator = SessionRow {
        mediator_id: Some(caller.user_id.clone()),
        ..row
    };
    let mut outbox = Outbox::default();
    tell_everyone(
        &mut tx,
        &with_mediator,
        "A mediator from the platform joined the chat.",
        &mut outbox,
    )
    .await?;
    // The parties learn at once whether their new participant is online (section 8).
    let presence = shared::frames::Event::Presence {
        session_id: with_mediator.session_id,
        role: Role::Mediator,
        online: super::presence::is_online(&lifecycle.presence, &caller.user_id).await,
        timestamp: shared::time::now(),
    };
    outbox.to_user(&with_mediator.seeker_id, &presence);
    outbox.to_user(&with_mediator.provider_id, &presence);
    finish(lifecycle, tx, with_mediator.session_id, outbox).await?;
    Ok(ApiResponse::ok(Dispute::from(joined)))
}

pub async fn resolve(
    lifecycle: &Lifecycle,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    if caller.role != Role::Mediator {
        return Ok(ApiResponse::error(403, "only mediators resolve disputes"));
    }
    let Some(dispute_id) = request.uuid_id() else {
        return Ok(ApiResponse::not_found("dispute"));
    };
    let mut tx = lifecycle.pool.begin().await?;
    let Some(dispute) = load(&mut tx, dispute_id)
        .await?
        .filter(|dispute| dispute.mediator_id.as_deref() == Some(caller.user_id.as_str()))
    else {
        return Ok(ApiResponse::not_found("dispute"));
    };
    let resolution = match text_field(request.body.as_ref(), "resolution") {
        Ok(resolution) => resolution,
        Err(refusal) => return Ok(refusal),
    };
    let Some(row) = session::load_for_update(&mut tx, dispute.session_id).await? else {
        return Ok(ApiResponse::not_found("dispute"));
    };
    let resolved: Option<Row> = sqlx::query_as::<_, Row>(concat!(
        "UPDATE disputes SET status = 'resolved', resolution = $2, resolved_at = now()
         WHERE dispute_id = $1 AND status = 'joined'
         RETURNING ",
        dispute_columns!()
    ))
    .bind(dispute_id)
    .bind(&resolution)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(resolved) = resolved else {
        return Ok(ApiResponse::error(409, "this dispute is already resolved"));
    };
    let mut outbox = Outbox::default();
    // Everyone, the mediator included, reads the resolution; then the mediator leaves.
    tell_everyone(
        &mut tx,
        &row,
        &format!("The mediator resolved the dispute: {resolution}"),
        &mut outbox,
    )
    .await?;
    sqlx::query(
        "UPDATE work_sessions SET dispute_id = NULL, mediator_id = NULL WHERE session_id = $1",
    )
    .bind(row.session_id)
    .execute(&mut *tx)
    .await?;
    if !row.state().is_live() {
        super::finish_service::start_chat_expiry(&mut tx, row.session_id, lifecycle.chat_retention)
            .await?;
    }
    finish(lifecycle, tx, row.session_id, outbox).await?;
    Ok(ApiResponse::ok(Dispute::from(resolved)))
}
