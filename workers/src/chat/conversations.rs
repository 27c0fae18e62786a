//! The inbox (contract section 9): `GET /api/conversations?limit=20&before=<cursor>`, the caller's
//! sessions (live, or ended with their chat not yet expired), most recent activity first, each with
//! its last message, the caller's unread count and its dispute. One index scan finds the page
//! (`work_sessions_inbox_by_<role>`: user, last activity, id), then each of its sessions costs two
//! index probes (last message by `seq`, unread by the partial `chat_messages_unread`), so a user
//! with thousands of past sessions pays for the page only.

use crate::api_server::Caller;
use chrono::{DateTime, Utc};
use shared::api::{ApiRequest, ApiResponse};
use shared::auth::Role;
use shared::frames::{Content, MessageKind};
use shared::rest::{Conversation, ConversationPage, DisputeSummary, LastMessage};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

#[derive(FromRow)]
struct Row {
    session_id: Uuid,
    work_id: i64,
    service_type: String,
    connection_state: String,
    last_activity_at: DateTime<Utc>,
    last_seq: Option<i64>,
    last_sender_type: Option<String>,
    last_kind: Option<String>,
    last_text: Option<String>,
    last_at: Option<DateTime<Utc>>,
    unread_count: i64,
    dispute_id: Option<Uuid>,
    dispute_status: Option<String>,
}

/// The inbox of one side: `$side` is the caller's column, `$own_type` their `sender_type`, and
/// `$unread` what makes a message of the others unread for them (a party: not read; a mediator,
/// whose reading moves no status: beyond how far they read).
macro_rules! inbox_query {
    ($side:literal, $own_type:literal, $unread:literal) => {
        concat!(
            "SELECT s.session_id, s.work_id, o.service_type, s.connection_state, s.last_activity_at,
                    lm.seq AS last_seq, lm.sender_type AS last_sender_type, lm.kind AS last_kind,
                    lm.message_text AS last_text, lm.created_at AS last_at, u.unread_count,
                    d.dispute_id, d.status AS dispute_status
             FROM (SELECT session_id, work_id, connection_state, last_activity_at, mediator_read_seq
                   FROM work_sessions
                   WHERE ",
            $side,
            " = $1 AND (chat_expires_at IS NULL OR chat_expires_at > now())
                     AND ($2::timestamptz IS NULL OR (last_activity_at, session_id) < ($2, $3))
                   ORDER BY last_activity_at DESC, session_id DESC LIMIT $4) s
             JOIN work_orders o ON o.work_id = s.work_id
             LEFT JOIN LATERAL (
                 SELECT seq, sender_type, kind, message_text, created_at FROM chat_messages
                 WHERE session_id = s.session_id AND (expires_at IS NULL OR expires_at > now())
                 ORDER BY seq DESC LIMIT 1) lm ON true
             CROSS JOIN LATERAL (
                 SELECT count(*) AS unread_count FROM chat_messages
                 WHERE session_id = s.session_id AND ",
            $unread,
            " AND sender_type NOT IN ('",
            $own_type,
            "', 'system') AND (expires_at IS NULL OR expires_at > now())) u
             LEFT JOIN LATERAL (
                 SELECT dispute_id, status FROM disputes WHERE session_id = s.session_id
                 ORDER BY created_at DESC LIMIT 1) d ON true
             ORDER BY s.last_activity_at DESC, s.session_id DESC"
        )
    };
}

/// `<microseconds since the epoch>_<session id>` of the last conversation of a page.
fn cursor(at: DateTime<Utc>, session_id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), session_id)
}

fn parse_cursor(cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, session_id) = cursor.split_once('_')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(session_id).ok()?,
    ))
}

pub async fn list(
    pool: &PgPool,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let limit = match request.query.get("limit").map(|limit| limit.parse::<i64>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if limit >= 1 => limit.min(MAX_LIMIT),
        Some(_) => return Ok(ApiResponse::error(422, "limit must be a positive integer")),
    };
    let before = match request
        .query
        .get("before")
        .map(|before| parse_cursor(before))
    {
        None => None,
        Some(Some(before)) => Some(before),
        Some(None) => {
            return Ok(ApiResponse::error(
                422,
                "before must be a next_cursor of an earlier page",
            ));
        }
    };
    let query = match caller.role {
        Role::Seeker => inbox_query!("seeker_id", "seeker", "delivery_status <> 'read'"),
        Role::Provider => inbox_query!("provider_id", "provider", "delivery_status <> 'read'"),
        Role::Mediator => inbox_query!("mediator_id", "mediator", "seq > s.mediator_read_seq"),
    };
    let mut rows = sqlx::query_as::<_, Row>(query)
        .bind(&caller.user_id)
        .bind(before.map(|(at, _)| at))
        .bind(before.map(|(_, session_id)| session_id))
        .bind(limit + 1)
        .fetch_all(pool)
        .await?;
    let next_cursor = (rows.len() as i64 > limit)
        .then(|| rows.get(limit as usize - 1))
        .flatten()
        .map(|row| cursor(row.last_activity_at, row.session_id));
    rows.truncate(limit as usize);
    let conversations: Vec<Conversation> = rows
        .into_iter()
        .map(|row| {
            let last_message = match (row.last_seq, row.last_sender_type, row.last_at) {
                (Some(seq), Some(sender_type), Some(at)) => {
                    let content = Content {
                        kind: row
                            .last_kind
                            .as_deref()
                            .and_then(MessageKind::parse)
                            .unwrap_or_default(),
                        ..Content::default()
                    };
                    Some(LastMessage {
                        seq,
                        sender_type,
                        kind: content.kind,
                        preview: content.preview(row.last_text.as_deref().unwrap_or_default()),
                        timestamp: shared::time::rfc3339(at),
                    })
                }
                _ => None,
            };
            Conversation {
                session_id: row.session_id,
                work_id: row.work_id,
                service_type: row.service_type,
                connection_state: row.connection_state,
                my_role: caller.role,
                last_message,
                unread_count: row.unread_count,
                dispute: row
                    .dispute_id
                    .zip(row.dispute_status)
                    .map(|(dispute_id, status)| DisputeSummary { dispute_id, status }),
                updated_at: shared::time::rfc3339(row.last_activity_at),
            }
        })
        .collect();
    Ok(ApiResponse::ok(ConversationPage {
        conversations,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        let at = DateTime::from_timestamp_micros(1_790_000_000_123_456).expect("time");
        let session_id = Uuid::new_v4();
        assert_eq!(
            parse_cursor(&cursor(at, session_id)),
            Some((at, session_id))
        );
        assert_eq!(parse_cursor("garbage"), None);
    }
}
