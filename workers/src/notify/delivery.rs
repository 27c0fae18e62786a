//! The outbox's second step: due deliveries are claimed, POSTed and their outcome recorded.
//!
//! A claim is one `UPDATE ... WHERE (webhook_id, url) IN (SELECT ... FOR UPDATE SKIP LOCKED)`
//! that counts the attempt and moves `next_attempt_at` `WEBHOOK_CLAIM_SECS` ahead: any number of
//! instances claim disjoint rows, and a row whose instance died mid-request comes due again
//! by itself once the claim runs out (its outcome unknown, it is sent again with the same
//! `webhook-id`; receivers de-duplicate). The outcome is recorded only if the row is still this
//! claim's (same attempt number, still pending), so an attempt outliving its claim changes nothing.
//!
//! The HTTP client is reqwest on rustls: pooled connections per host, no redirects followed (a
//! 3xx is given up, as the policy says), `WEBHOOK_TIMEOUT_SECS` (10) for the whole exchange.

use super::metrics::url_label;
use super::policy::{self, Answer, Next, Policy};
use super::signing::Signer;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{FromRow, PgPool};
use std::time::{Duration, Instant};

/// A claimed delivery and what its request needs.
#[derive(FromRow)]
pub struct Claimed {
    webhook_id: String,
    url: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    event_type: String,
    occurred_at: DateTime<Utc>,
    data: Value,
}

/// The HTTP client every delivery shares.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .user_agent("marketplace-webhooks/1")
        .build()
}

/// Claims up to `limit` due deliveries for `claim_for`.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    claim_for: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as::<_, Claimed>(
        "WITH claimed AS (
             UPDATE webhook_deliveries d
             SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
             WHERE (d.webhook_id, d.url) IN (
                 SELECT webhook_id, url FROM webhook_deliveries
                 WHERE outcome IS NULL AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING d.webhook_id, d.url, d.attempts, d.created_at)
         SELECT c.webhook_id, c.url, c.attempts, c.created_at,
                e.event_type, e.occurred_at, e.data
         FROM claimed c JOIN webhook_events e ON e.webhook_id = c.webhook_id",
    )
    .bind(limit)
    .bind(claim_for.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// The request body: the same bytes on every attempt (the event's stored time and data).
pub fn body(event_type: &str, occurred_at: DateTime<Utc>, data: &Value) -> String {
    json!({
        "type": event_type,
        "timestamp": shared::time::rfc3339(occurred_at),
        "data": data,
    })
    .to_string()
}

/// Sends one claimed delivery and records what came of it.
pub async fn attempt(
    pool: &PgPool,
    client: &reqwest::Client,
    signer: &Signer,
    policy: &Policy,
    claimed: Claimed,
) {
    let body = body(&claimed.event_type, claimed.occurred_at, &claimed.data);
    let timestamp = Utc::now().timestamp();
    let signature = signer.signature_header(&claimed.webhook_id, timestamp, body.as_bytes());
    let started = Instant::now();
    let sent = client
        .post(&claimed.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &claimed.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let (answer, error) = match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| policy::parse_retry_after(value, Utc::now()));
            // Reading the (small) answer lets the connection go back to the pool.
            let _ = response.bytes().await;
            (
                Answer::Status {
                    status,
                    retry_after,
                },
                None,
            )
        }
        Err(error) => (Answer::NoAnswer, Some(error_text(&error))),
    };
    let label = url_label(&claimed.url);
    metrics::histogram!("webhook_attempt_seconds", "url" => label.clone())
        .record(started.elapsed().as_secs_f64());
    let next = policy.next(claimed.attempts.max(1) as u32, &answer, jitter());
    let status = match &answer {
        Answer::Status { status, .. } => Some(i32::from(*status)),
        Answer::NoAnswer => None,
    };
    let (outcome, delay, metric) = match &next {
        Next::Delivered => (Some("delivered"), Duration::ZERO, "delivered"),
        Next::GiveUp => (Some("given_up"), Duration::ZERO, "given_up"),
        Next::RetryAfter(delay) => (None, *delay, "retried"),
    };
    metrics::counter!("webhook_deliveries_total", "outcome" => metric, "url" => label.clone())
        .increment(1);
    if next == Next::Delivered {
        let delay = (Utc::now() - claimed.created_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!("webhook_delivery_delay_seconds", "url" => label)
            .record(delay.as_secs_f64());
    }
    match &next {
        Next::Delivered => {
            tracing::debug!(webhook_id = %claimed.webhook_id, url = %claimed.url, "delivered")
        }
        Next::GiveUp => {
            tracing::warn!(webhook_id = %claimed.webhook_id, url = %claimed.url, ?status, error, attempts = claimed.attempts, "webhook given up")
        }
        Next::RetryAfter(delay) => {
            tracing::info!(webhook_id = %claimed.webhook_id, url = %claimed.url, ?status, error, ?delay, "webhook attempt failed; retrying")
        }
    }
    let recorded = sqlx::query(
        "UPDATE webhook_deliveries
         SET outcome = $4, last_status = $5, last_error = $6,
             next_attempt_at = CASE WHEN $4::text IS NULL THEN now() + make_interval(secs => $7)
                                    ELSE next_attempt_at END,
             finished_at = CASE WHEN $4::text IS NULL THEN NULL ELSE now() END
         WHERE webhook_id = $1 AND url = $2 AND attempts = $3 AND outcome IS NULL",
    )
    .bind(&claimed.webhook_id)
    .bind(&claimed.url)
    .bind(claimed.attempts)
    .bind(outcome)
    .bind(status)
    .bind(error)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await;
    if let Err(error) = recorded {
        // The claim runs out and the delivery is tried again: at least once, same webhook-id.
        tracing::warn!(%error, webhook_id = %claimed.webhook_id, "cannot record a webhook attempt");
    }
}

/// The error's kind and chain, short enough for a column.
fn error_text(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text.chars().take(500).collect()
}

/// A number in [0, 1) for the retry jitter (a v4 UUID's random bits: no extra dependency).
fn jitter() -> f64 {
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    (high >> 11) as f64 / (1u64 << 53) as f64
}
