//! Read up to a `seq` (contract section 9): `{"type":"messages_read","session_id","up_to_seq"}` over
//! the socket, or `POST /api/sessions/{id}/read {up_to_seq}`. Every message of the other parties
//! with `seq <= up_to_seq` not yet read becomes read (delivered implied); each sender whose
//! messages changed gets one `messages_read` event, and no per-message `message_status_update`.
//! Nothing changed, no event. Works on ended sessions too (their chat is still in the inbox until
//! it expires); the socket path has them closed anyway. A party's read also records that this
//! party has the mediator's messages it covers (each party's own, for the re-sends).

use super::batch::ChatBatch;
use crate::api_server::Caller;
use crate::outbox::{Delivery, Outbox, publish};
use crate::runtime::{FrameError, Sender};
use serde_json::Value;
use shared::api::{ApiRequest, ApiResponse};
use shared::auth::Role;
use shared::frames::Event;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

const INVALID_UP_TO_SEQ: &str = "up_to_seq must be a non-negative integer";

fn up_to_seq_of(value: Option<&Value>) -> Option<i64> {
    value.and_then(Value::as_i64).filter(|seq| *seq >= 0)
}

/// Marks the other parties' messages up to `up_to_seq` read; returns the events for their senders.
async fn mark_read(
    tx: &mut PgConnection,
    session_id: Uuid,
    reader: Role,
    up_to_seq: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut senders: Vec<(String, String)> = sqlx::query_as(
        "UPDATE chat_messages SET delivery_status = 'read', read_at = now(),
             delivered_at = COALESCE(delivered_at, now())
         WHERE session_id = $1 AND seq <= $2 AND delivery_status <> 'read'
           AND sender_type <> $3 AND sender_type <> 'system'
         RETURNING sender_id, sender_type",
    )
    .bind(session_id)
    .bind(up_to_seq)
    .bind(reader.as_str())
    .fetch_all(&mut *tx)
    .await?;
    senders.sort();
    senders.dedup();
    mediator_messages_delivered(tx, session_id, reader, up_to_seq).await?;
    let event = Event::MessagesRead {
        session_id,
        reader_role: reader,
        up_to_seq,
        timestamp: shared::time::now(),
    };
    Ok(senders
        .iter()
        .map(|(sender_id, _)| Delivery::to_user(sender_id, &event))
        .collect())
}

/// The mediator's messages up to `up_to_seq` are the reading party's now: a read implies delivery,
/// and the mediator's one status may have been moved by the other party already.
async fn mediator_messages_delivered(
    tx: &mut PgConnection,
    session_id: Uuid,
    reader: Role,
    up_to_seq: i64,
) -> Result<(), sqlx::Error> {
    let query = match reader {
        Role::Seeker => {
            "UPDATE chat_messages SET seeker_delivered_at = now()
             WHERE session_id = $1 AND seq <= $2 AND sender_type = 'mediator'
               AND seeker_delivered_at IS NULL"
        }
        Role::Provider => {
            "UPDATE chat_messages SET provider_delivered_at = now()
             WHERE session_id = $1 AND seq <= $2 AND sender_type = 'mediator'
               AND provider_delivered_at IS NULL"
        }
        Role::Mediator => return Ok(()),
    };
    sqlx::query(query)
        .bind(session_id)
        .bind(up_to_seq)
        .execute(tx)
        .await?;
    Ok(())
}

/// Moves how far the session's mediator has read (never back).
async fn mediator_read_up_to(
    tx: &mut PgConnection,
    session_id: Uuid,
    up_to_seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE work_sessions SET mediator_read_seq = GREATEST(mediator_read_seq, $2)
         WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(up_to_seq)
    .execute(tx)
    .await?;
    Ok(())
}

/// The `messages_read` frame, in its session's order with the chat messages it covers.
pub async fn handle(
    tx: &mut PgConnection,
    batch: &mut ChatBatch,
    sender: &Sender,
    session_id: Uuid,
    up_to_seq: Option<Value>,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let (_, role) = batch.participant(session_id, sender)?;
    let Some(up_to_seq) = up_to_seq_of(up_to_seq.as_ref()) else {
        return Err(FrameError::refused(INVALID_UP_TO_SEQ, Some(session_id)));
    };
    // A mediator's reading changes no status and tells nobody (section 10); it only moves how
    // far they have read, for their inbox.
    if role == Role::Mediator {
        batch.flush(tx).await?;
        mediator_read_up_to(tx, session_id, up_to_seq).await?;
        return Ok(());
    }
    // Messages and receipts earlier in this batch are what the reader has seen.
    batch.flush(tx).await?;
    for delivery in mark_read(tx, session_id, role, up_to_seq).await? {
        outbox.push(delivery);
    }
    Ok(())
}

/// `POST /api/sessions/{id}/read {up_to_seq}` -> `{session_id, up_to_seq, unread_count}`.
pub async fn over_rest(
    nats: &async_nats::Client,
    pool: &PgPool,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let Some(session_id) = request.uuid_id() else {
        return Ok(ApiResponse::not_found("session"));
    };
    let mut tx = pool.begin().await?;
    // Locked like a chat batch does, so the two never interleave on one session.
    let session = crate::session::load_for_update(&mut tx, session_id).await?;
    let Some(role) = session.and_then(|row| row.role_of(&caller.user_id, caller.role)) else {
        return Ok(ApiResponse::not_found("session"));
    };
    let body = request.body.unwrap_or(Value::Null);
    let Some(up_to_seq) = up_to_seq_of(body.get("up_to_seq")) else {
        return Ok(ApiResponse::error(422, INVALID_UP_TO_SEQ));
    };
    let deliveries = if role == Role::Mediator {
        mediator_read_up_to(&mut tx, session_id, up_to_seq).await?;
        Vec::new()
    } else {
        mark_read(&mut tx, session_id, role, up_to_seq).await?
    };
    let unread_count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM chat_messages m JOIN work_sessions s ON s.session_id = m.session_id
         WHERE m.session_id = $1 AND m.sender_type <> $2 AND m.sender_type <> 'system'
           AND (CASE WHEN $2 = 'mediator' THEN m.seq > s.mediator_read_seq
                     ELSE m.delivery_status <> 'read' END)
           AND (m.expires_at IS NULL OR m.expires_at > now())",
    )
    .bind(session_id)
    .bind(role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    publish(nats, &deliveries, "").await;
    Ok(ApiResponse::ok(shared::rest::ReadPosition {
        session_id,
        up_to_seq,
        unread_count,
    }))
}
