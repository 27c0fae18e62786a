//! `work_response` from the addressed provider. Accepting creates the session (`waiting`), turns
//! the provider inactive and the seeker not searching, and sends `work_accepted` to both;
//! rejecting sends the seeker the seed's `work_response`. Only a pending order can be answered, so
//! two racing accepts (two sockets of the provider) create exactly one session; a seeker is in at
//! most one live session, which a unique index holds even when two providers accept at once.

use super::search_status::{set_provider_active, set_seeker_searching};
use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use serde_json::Value;
use shared::frames::{Event, errors};
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

const SEEKER_BUSY: &str = "the seeker is already in another session";

#[derive(FromRow)]
struct Order {
    seeker_id: String,
    provider_id: String,
    service_type: String,
    status: String,
}

pub async fn handle(
    tx: &mut PgConnection,
    sender: &Sender,
    work_id: i64,
    accepted: Option<Value>,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let Some(Value::Bool(accepted)) = accepted else {
        return Err(FrameError::refused("accepted must be true or false", None));
    };
    let order = sqlx::query_as::<_, Order>(
        "SELECT seeker_id, provider_id, service_type, status FROM work_orders WHERE work_id = $1 FOR UPDATE",
    )
    .bind(work_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(order) = order.filter(|order| order.provider_id == sender.user_id) else {
        return Err(FrameError::refused(errors::WORK_NOT_FOUND, None));
    };
    if order.status != "pending" {
        return Err(FrameError::refused(
            format!("work order is not pending (it is {})", order.status),
            None,
        ));
    }
    if accepted {
        accept(tx, work_id, &order, outbox).await
    } else {
        reject(tx, work_id, &order, outbox).await
    }
}

async fn accept(
    tx: &mut PgConnection,
    work_id: i64,
    order: &Order,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let seeker_busy: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM work_sessions
                        WHERE seeker_id = $1 AND connection_state IN ('waiting', 'active'))",
    )
    .bind(&order.seeker_id)
    .fetch_one(&mut *tx)
    .await?;
    if seeker_busy {
        return Err(FrameError::refused(SEEKER_BUSY, None));
    }
    let session_id = Uuid::new_v4();
    let inserted = sqlx::query("INSERT INTO work_sessions (session_id, work_id, seeker_id, provider_id) VALUES ($1, $2, $3, $4)")
        .bind(session_id)
        .bind(work_id)
        .bind(&order.seeker_id)
        .bind(&order.provider_id)
        .execute(&mut *tx)
        .await;
    match inserted {
        Ok(_) => {}
        // Another provider's accept of this seeker committed after the check above.
        Err(sqlx::Error::Database(error))
            if error.constraint() == Some("work_sessions_one_live_per_seeker") =>
        {
            return Err(FrameError::refused(SEEKER_BUSY, None));
        }
        Err(error) => return Err(error.into()),
    }
    sqlx::query(
        "UPDATE work_orders SET status = 'accepted', responded_at = now() WHERE work_id = $1",
    )
    .bind(work_id)
    .execute(&mut *tx)
    .await?;
    set_provider_active(tx, &order.provider_id, false).await?;
    set_seeker_searching(tx, &order.seeker_id, false).await?;
    crate::webhook_events::work_answered(
        tx,
        &order.seeker_id,
        work_id,
        "accepted",
        Some(session_id),
    )
    .await?;
    let accepted = |message: &str| Event::WorkAccepted {
        work_id,
        session_id,
        connection_state: String::from("waiting"),
        message: message.to_owned(),
        timestamp: shared::time::now(),
    };
    outbox.to_user(
        &order.provider_id,
        &accepted("Work accepted. Waiting for seeker to select communication mediums."),
    );
    outbox.to_user(
        &order.seeker_id,
        &accepted("Provider accepted your request"),
    );
    crate::system_messages::write(
        tx,
        session_id,
        crate::system_messages::SESSION_STARTED,
        &[&order.seeker_id, &order.provider_id],
        outbox,
    )
    .await?;
    Ok(())
}

async fn reject(
    tx: &mut PgConnection,
    work_id: i64,
    order: &Order,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    sqlx::query(
        "UPDATE work_orders SET status = 'rejected', responded_at = now() WHERE work_id = $1",
    )
    .bind(work_id)
    .execute(&mut *tx)
    .await?;
    crate::webhook_events::work_answered(tx, &order.seeker_id, work_id, "rejected", None).await?;
    let provider: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT p.name, p.mobile, u.token_name FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id
         WHERE u.user_id = $1",
    )
    .bind(&order.provider_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (name, mobile, token_name) = provider.unwrap_or_default();
    outbox.to_user(
        &order.seeker_id,
        &Event::WorkResponse {
            work_id,
            accepted: false,
            provider_name: name.or(token_name),
            provider_mobile: mobile,
            service_type: order.service_type.clone(),
            response_time: shared::time::now(),
        },
    );
    Ok(())
}
