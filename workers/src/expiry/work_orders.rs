//! Pending work orders nobody answered within `WORK_ORDER_TTL_SECS` expire (contract section 12),
//! so a seeker's order cannot hold a place under the caps, or sit in a provider's list, forever.
//! The seeker hears seed 000's rejection (`work_response`, `accepted: false`, with `reason:
//! "expired"`, so a seed-000 client shows a rejection), the provider `work_expired`.
//!
//! Each sweep is one conditional `UPDATE ... WHERE status = 'pending' ... RETURNING` per batch: an
//! order expires exactly once even when two instances sweep at once (the lease makes that rare),
//! and an order a provider is answering at that moment (its row locked by the lifecycle worker)
//! is skipped, not waited for: the answer wins, or the next sweep expires it. A provider who
//! answers an expired order is refused as for any order that is not pending.

use crate::outbox::{Delivery, publish};
use serde_json::{Value, json};
use shared::frames::Event;
use sqlx::{FromRow, PgPool};
use std::sync::Arc;
use std::time::Duration;

/// Orders expired per statement (each its own short transaction).
const BATCH: i64 = 500;

/// How often the pending orders are looked at, whatever `EXPIRY_SWEEP_SECS` says: an order
/// expires within about this (and the lease's lateness) of its time. Cheap: the lease check and
/// one probe of a partial index that holds only the pending orders.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What the two events need of an order that just expired.
#[derive(FromRow)]
struct Expired {
    work_id: i64,
    seeker_id: String,
    provider_id: String,
    service_type: String,
    provider_name: Option<String>,
    provider_mobile: Option<String>,
    provider_token_name: Option<String>,
}

/// Expires every pending order created at least `ttl` ago and tells both parties; returns how
/// many expired. Events go out after each batch commits (nobody hears of a change that did not
/// happen); the order's status is the record when an event is lost with a dying process.
pub async fn sweep(
    nats: &async_nats::Client,
    pool: &PgPool,
    ttl: Duration,
) -> Result<u64, sqlx::Error> {
    let mut expired_count = 0;
    loop {
        let expired = sqlx::query_as::<_, Expired>(
            "WITH expired AS (
                 UPDATE work_orders SET status = 'expired'
                 WHERE work_id IN (
                     SELECT work_id FROM work_orders
                     WHERE status = 'pending' AND created_at <= now() - make_interval(secs => $1)
                     ORDER BY created_at LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                   AND status = 'pending'
                 RETURNING work_id, seeker_id, provider_id, service_type),
             -- The seeker's `work.answered` webhook, in the same statement (contract section 13).
             webhook AS (
                 INSERT INTO webhook_events (event_type, user_id, role, data)
                 SELECT 'work.answered', seeker_id, 'seeker',
                        jsonb_build_object('user_id', seeker_id, 'role', 'seeker',
                                           'session_id', NULL, 'work_id', work_id,
                                           'status', 'expired')
                 FROM expired)
             SELECT e.work_id, e.seeker_id, e.provider_id, e.service_type,
                    p.name AS provider_name, p.mobile AS provider_mobile,
                    u.token_name AS provider_token_name
             FROM expired e
             JOIN users u ON u.user_id = e.provider_id
             LEFT JOIN profiles p ON p.user_id = e.provider_id
             ORDER BY e.work_id",
        )
        .bind(ttl.as_secs_f64())
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        let batch = expired.len();
        let deliveries: Vec<Delivery> = expired.into_iter().flat_map(deliveries).collect();
        publish(nats, &deliveries, "").await;
        expired_count += batch as u64;
        if (batch as i64) < BATCH {
            break;
        }
    }
    if expired_count > 0 {
        tracing::info!(expired = expired_count, "pending work orders expired");
    }
    metrics::counter!("expiry_work_orders_expired_total").increment(expired_count);
    Ok(expired_count)
}

/// The seeker's rejection and the provider's `work_expired`, traced like the order's creation.
fn deliveries(order: Expired) -> [Delivery; 2] {
    let trace_id: Arc<str> = Arc::from(format!("work-{}", order.work_id));
    let rejection = Event::WorkResponse {
        work_id: order.work_id,
        accepted: false,
        provider_name: order.provider_name.or(order.provider_token_name),
        provider_mobile: order.provider_mobile,
        service_type: order.service_type,
        response_time: shared::time::now(),
    };
    let to_seeker = Delivery {
        frame: with_reason(&rejection, "expired"),
        trace_id: trace_id.clone(),
        ..Delivery::to_user(&order.seeker_id, &rejection)
    };
    let to_provider = Delivery {
        user_id: order.provider_id,
        conn_id: None,
        close: false,
        frame: json!({ "type": "work_expired", "work_id": order.work_id }).to_string(),
        notice_subject: None,
        trace_id,
        partition: 0,
    };
    [to_seeker, to_provider]
}

/// `event` as JSON with `reason` added: the seed's frame, unchanged for clients that ignore it.
fn with_reason(event: &Event, reason: &str) -> String {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut fields)) => {
            fields.insert(String::from("reason"), Value::from(reason));
            Value::Object(fields).to_string()
        }
        // Serializing a plain struct cannot fail; the seed's frame is the next best answer.
        _ => event.to_json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Expired {
        Expired {
            work_id: 7,
            seeker_id: String::from("seek1"),
            provider_id: String::from("prov1"),
            service_type: String::from("Plumbing"),
            provider_name: None,
            provider_mobile: Some(String::from("9876543210")),
            provider_token_name: Some(String::from("From Token")),
        }
    }

    #[test]
    fn the_seeker_gets_the_seed_rejection_with_the_reason_and_the_provider_work_expired() {
        let [to_seeker, to_provider] = deliveries(order());
        assert_eq!(to_seeker.user_id, "seek1");
        let rejection: Value = serde_json::from_str(&to_seeker.frame).expect("JSON");
        assert_eq!(rejection["type"], "work_response");
        assert_eq!(rejection["work_id"], 7);
        assert_eq!(rejection["accepted"], false);
        assert_eq!(rejection["reason"], "expired");
        assert_eq!(rejection["provider_name"], "From Token");
        assert_eq!(rejection["provider_mobile"], "9876543210");
        assert_eq!(rejection["service_type"], "Plumbing");
        assert!(rejection["response_time"].is_string());
        assert_eq!(to_provider.user_id, "prov1");
        let expired: Value = serde_json::from_str(&to_provider.frame).expect("JSON");
        assert_eq!(expired, json!({"type": "work_expired", "work_id": 7}));
        assert_eq!(&*to_provider.trace_id, "work-7");
    }
}
