//! `POST /api/work-orders` (a seeker asks a provider; the provider's sockets get `work_assigned`)
//! and `GET /api/work-orders/{work_id}` (its seeker or provider only; 404 for anyone else).
//!
//! A seeker holds at most one pending order per provider and `WORK_ORDER_MAX_PENDING` in all
//! (contract section 12), so one seeker cannot flood a provider, or every provider, with orders;
//! the expiry worker ends the orders nobody answers, which frees their places.

use super::{Lifecycle, text, work_assigned};
use crate::api_server::Caller;
use crate::outbox::{Delivery, publish};
use shared::api::{ApiRequest, ApiResponse};
use shared::auth::is_valid_user_id;
use shared::geo::Position;
use shared::rest::{NewWorkOrder, WorkOrder, WorkOrderCreated};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// The answer to an order over either cap (contract section 12).
const TOO_MANY_PENDING: &str = "too many pending work orders";

pub async fn create(
    lifecycle: &Lifecycle,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let Some(Ok(body)) = request.body.map(serde_json::from_value::<NewWorkOrder>) else {
        return Ok(ApiResponse::error(
            422,
            "expected {provider_id, service_type, message?, latitude, longitude}",
        ));
    };
    // Before anything else: Postgres would refuse the insert, and the caller must hear which field.
    if let Err(error) = text::refuse_nul_in(&[
        ("service_type", Some(body.service_type.as_str())),
        ("message", body.message.as_deref()),
    ]) {
        return Ok(ApiResponse::error(400, &error));
    }
    if body.service_type.trim().is_empty() {
        return Ok(ApiResponse::error(422, "service_type is required"));
    }
    if Position::new(body.latitude, body.longitude).is_none() {
        return Ok(ApiResponse::error(
            422,
            shared::frames::errors::INVALID_COORDINATES,
        ));
    }
    if !is_valid_user_id(&body.provider_id) {
        return Ok(ApiResponse::not_found("provider"));
    }
    let pool = &lifecycle.pool;
    crate::users::record(pool, &caller.user_id, caller.role, caller.name.as_deref()).await?;
    let mut tx = pool.begin().await?;
    let provider_active: Option<Option<bool>> = sqlx::query_scalar(
        "SELECT ps.is_active FROM users u LEFT JOIN provider_status ps ON ps.user_id = u.user_id
         WHERE u.user_id = $1 AND u.role = 'provider'",
    )
    .bind(&body.provider_id)
    .fetch_optional(&mut *tx)
    .await?;
    match provider_active {
        None => return Ok(ApiResponse::not_found("provider")),
        Some(Some(true)) => {}
        Some(_) => return Ok(ApiResponse::error(409, "provider is not active")),
    }
    // Serialises concurrent orders of one seeker with the session check and the caps below: the
    // next creation of this seeker counts only after this one committed or rolled back (`NO KEY`:
    // rows referring to the user, inserted elsewhere meanwhile, are not held up).
    sqlx::query("SELECT 1 FROM users WHERE user_id = $1 FOR NO KEY UPDATE")
        .bind(&caller.user_id)
        .execute(&mut *tx)
        .await?;
    let in_session: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM work_sessions
                        WHERE seeker_id = $1 AND connection_state IN ('waiting', 'active'))",
    )
    .bind(&caller.user_id)
    .fetch_one(&mut *tx)
    .await?;
    if in_session {
        return Ok(ApiResponse::error(
            409,
            "you are already in a waiting or active session",
        ));
    }
    let (pending_to_provider, pending_in_all): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE provider_id = $2), count(*) FROM work_orders
         WHERE seeker_id = $1 AND status = 'pending'",
    )
    .bind(&caller.user_id)
    .bind(&body.provider_id)
    .fetch_one(&mut *tx)
    .await?;
    if pending_to_provider > 0 || pending_in_all >= lifecycle.work_order_max_pending {
        return Ok(ApiResponse::error(409, TOO_MANY_PENDING));
    }
    let work_id: i64 = sqlx::query_scalar(
        "INSERT INTO work_orders (seeker_id, provider_id, service_type, message, latitude, longitude)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING work_id",
    )
    .bind(&caller.user_id)
    .bind(&body.provider_id)
    .bind(body.service_type.trim())
    .bind(&body.message)
    .bind(body.latitude)
    .bind(body.longitude)
    .fetch_one(&mut *tx)
    .await?;
    let event = work_assigned::for_order(&mut *tx, work_id).await?;
    crate::webhook_events::work_assigned(&mut tx, &body.provider_id, work_id).await?;
    tx.commit().await?;
    if let Some(event) = event {
        let delivery = Delivery::to_user(&body.provider_id, &event);
        publish(&lifecycle.nats, &[delivery], &format!("work-{work_id}")).await;
    }
    Ok(ApiResponse::with_status(
        201,
        WorkOrderCreated {
            work_id,
            status: "pending".to_owned(),
        },
    ))
}

#[derive(FromRow)]
struct OrderView {
    work_id: i64,
    status: String,
    session_id: Option<Uuid>,
    service_type: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

pub async fn get(
    pool: &PgPool,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let Some(work_id) = request.id.and_then(|id| id.parse::<i64>().ok()) else {
        return Ok(ApiResponse::not_found("work order"));
    };
    let order = sqlx::query_as::<_, OrderView>(
        "SELECT w.work_id, w.status, s.session_id, w.service_type, w.created_at
         FROM work_orders w LEFT JOIN work_sessions s ON s.work_id = w.work_id
         WHERE w.work_id = $1
           AND CASE WHEN $3 = 'seeker' THEN w.seeker_id = $2 ELSE w.provider_id = $2 END",
    )
    .bind(work_id)
    .bind(&caller.user_id)
    // The caller's side of the order, as their token's role says: a token of the other role is
    // someone else (found by the authorization probe).
    .bind(caller.role.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(match order {
        Some(order) => ApiResponse::ok(WorkOrder {
            work_id: order.work_id,
            status: order.status,
            session_id: order.session_id,
            service_type: order.service_type,
            created_at: shared::time::rfc3339(order.created_at),
        }),
        None => ApiResponse::not_found("work order"),
    })
}
