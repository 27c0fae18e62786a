//! Records webhook events (contract section 13) in the transaction of the change that causes
//! them: the lifecycle, distance and expiry workers call these beside their own writes, so an
//! event exists exactly when its cause committed, and a crash in between loses nothing. The
//! notify worker (`crate::notify`) decides later whether the recipient is offline and delivers.
//!
//! The payload's `data` never names the other party: only the recipient's own id and role, the
//! session and the work order.

use serde_json::{Value, json};
use shared::auth::Role;
use sqlx::PgConnection;
use uuid::Uuid;

/// The event types of contract section 13.
pub const MESSAGE_UNREAD: &str = "message.unread";
pub const WORK_ASSIGNED: &str = "work.assigned";
pub const WORK_ANSWERED: &str = "work.answered";
pub const PROVIDER_ARRIVED: &str = "session.provider_arrived";
pub const SESSION_ENDED: &str = "session.ended";
pub const DISPUTE_OPENED: &str = "dispute.opened";

/// Stores one event for `user_id` (None: the mediators) with `data` completed by the recipient.
pub async fn record(
    tx: &mut PgConnection,
    event_type: &str,
    user_id: Option<&str>,
    role: Role,
    mut data: Value,
) -> Result<(), sqlx::Error> {
    if let Value::Object(fields) = &mut data {
        fields.insert(String::from("user_id"), json!(user_id));
        fields.insert(String::from("role"), json!(role.as_str()));
    }
    sqlx::query(
        "INSERT INTO webhook_events (event_type, user_id, role, data) VALUES ($1, $2, $3, $4)",
    )
    .bind(event_type)
    .bind(user_id)
    .bind(role.as_str())
    .bind(data)
    .execute(tx)
    .await?;
    Ok(())
}

/// `work.assigned`: a new work order for `provider_id`.
pub async fn work_assigned(
    tx: &mut PgConnection,
    provider_id: &str,
    work_id: i64,
) -> Result<(), sqlx::Error> {
    let data = json!({ "session_id": null, "work_id": work_id });
    record(tx, WORK_ASSIGNED, Some(provider_id), Role::Provider, data).await
}

/// `work.answered`: the seeker's order was accepted (with its new session), rejected or expired.
pub async fn work_answered(
    tx: &mut PgConnection,
    seeker_id: &str,
    work_id: i64,
    status: &str,
    session_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    let data = json!({ "session_id": session_id, "work_id": work_id, "status": status });
    record(tx, WORK_ANSWERED, Some(seeker_id), Role::Seeker, data).await
}

/// `session.ended`: the other party cancelled or finished the session (`how`: "cancelled" or
/// "completed"); `recipient` is the party who did not end it.
pub async fn session_ended(
    tx: &mut PgConnection,
    recipient: (&str, Role),
    session_id: Uuid,
    work_id: i64,
    how: &str,
) -> Result<(), sqlx::Error> {
    let data = json!({
        "session_id": session_id,
        "work_id": work_id,
        "connection_state": how,
        "ended_by": recipient.1.other().as_str(),
    });
    record(tx, SESSION_ENDED, Some(recipient.0), recipient.1, data).await
}

/// `session.provider_arrived`, to the seeker.
pub async fn provider_arrived(
    tx: &mut PgConnection,
    seeker_id: &str,
    session_id: Uuid,
    work_id: i64,
    distance_meters: f64,
) -> Result<(), sqlx::Error> {
    let data = json!({
        "session_id": session_id,
        "work_id": work_id,
        "distance_meters": distance_meters,
    });
    record(tx, PROVIDER_ARRIVED, Some(seeker_id), Role::Seeker, data).await
}

/// `dispute.opened`, to the mediators (no recipient, no presence check).
pub async fn dispute_opened(
    tx: &mut PgConnection,
    session_id: Uuid,
    work_id: i64,
    dispute_id: Uuid,
    opened_by: Role,
) -> Result<(), sqlx::Error> {
    let data = json!({
        "session_id": session_id,
        "work_id": work_id,
        "dispute_id": dispute_id,
        "opened_by": opened_by.as_str(),
    });
    record(tx, DISPUTE_OPENED, None, Role::Mediator, data).await
}
