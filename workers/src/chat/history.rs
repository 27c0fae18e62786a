//! `GET /api/sessions/{id}/messages?limit=50&before=<seq>`: the newest `limit` messages (default
//! 50, at most 200) below `before`, oldest first, with `has_more` when older ones exist. For
//! participants only; ended sessions keep their history until it expires.

use super::stored::StoredMessage;
use crate::api_server::Caller;
use shared::api::{ApiRequest, ApiResponse};
use shared::rest::{HistoryEntry, MessagePage};
use sqlx::PgPool;

pub async fn list(
    pool: &PgPool,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let Some(session_id) = request.uuid_id() else {
        return Ok(ApiResponse::not_found("session"));
    };
    let limit = match request.query.get("limit").map(|limit| limit.parse::<i64>()) {
        None => 50,
        Some(Ok(limit)) if limit >= 1 => limit.min(200),
        Some(_) => return Ok(ApiResponse::error(422, "limit must be a positive integer")),
    };
    let before = match request
        .query
        .get("before")
        .map(|before| before.parse::<i64>())
    {
        None => None,
        Some(Ok(before)) => Some(before),
        Some(Err(_)) => return Ok(ApiResponse::error(422, "before must be an integer seq")),
    };
    let mut connection = pool.acquire().await?;
    let session = crate::session::load(&mut connection, session_id).await?;
    if session
        .and_then(|row| row.role_of(&caller.user_id, caller.role))
        .is_none()
    {
        return Ok(ApiResponse::not_found("session"));
    }
    let mut rows = sqlx::query_as::<_, StoredMessage>(crate::stored_message_select!(
        "WHERE session_id = $1 AND ($2::bigint IS NULL OR seq < $2)
           AND (expires_at IS NULL OR expires_at > now())
         ORDER BY seq DESC LIMIT $3"
    ))
    .bind(session_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&mut *connection)
    .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    rows.reverse();
    let messages: Vec<HistoryEntry> = rows
        .into_iter()
        .map(StoredMessage::into_history_entry)
        .collect();
    Ok(ApiResponse::ok(MessagePage { messages, has_more }))
}
