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
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::webhooks::Signer;
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

/// Sends one claimed delivery; answers what came of it, for [`record`].
pub async fn attempt(
    client: &reqwest::Client,
    signer: &Signer,
    policy: &Policy,
    claimed: Claimed,
) -> Outcome {
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
    Outcome {
        webhook_id: claimed.webhook_id,
        url: claimed.url,
        attempts: claimed.attempts,
        outcome,
        status,
        error,
        delay_secs: delay.as_secs_f64(),
    }
}

/// What one attempt came to, to be recorded.
pub struct Outcome {
    webhook_id: String,
    url: String,
    attempts: i32,
    /// None: retried after `delay_secs`.
    outcome: Option<&'static str>,
    status: Option<i32>,
    error: Option<String>,
    delay_secs: f64,
}

/// Outcomes recorded per statement at most.
const RECORD_BATCH: usize = 256;

/// Records the outcomes sent on `outcomes` until every sender is gone, as many per statement as
/// have arrived meanwhile (one round trip for many attempts under load, at once when idle).
pub async fn record(pool: PgPool, mut outcomes: tokio::sync::mpsc::Receiver<Outcome>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while outcomes.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        if let Err(error) = record_batch(&pool, &batch).await {
            // The claims run out and the deliveries are tried again: at least once, same id.
            tracing::warn!(%error, attempts = batch.len(), "cannot record webhook attempts");
        }
        batch.clear();
    }
}

/// Each outcome is written only if its row is still this claim's (same attempt, still pending).
async fn record_batch(pool: &PgPool, batch: &[Outcome]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = batch.iter().map(|o| o.webhook_id.as_str()).collect();
    let urls: Vec<&str> = batch.iter().map(|o| o.url.as_str()).collect();
    let attempts: Vec<i32> = batch.iter().map(|o| o.attempts).collect();
    let outcomes: Vec<Option<&str>> = batch.iter().map(|o| o.outcome).collect();
    let statuses: Vec<Option<i32>> = batch.iter().map(|o| o.status).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|o| o.error.as_deref()).collect();
    let delays: Vec<f64> = batch.iter().map(|o| o.delay_secs).collect();
    sqlx::query(
        "UPDATE webhook_deliveries d
         SET outcome = r.outcome, last_status = r.status, last_error = r.error,
             next_attempt_at = CASE WHEN r.outcome IS NULL
                                    THEN now() + make_interval(secs => r.delay)
                                    ELSE d.next_attempt_at END,
             finished_at = CASE WHEN r.outcome IS NULL THEN NULL ELSE now() END
         FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::int[], $6::text[],
                     $7::float8[]) AS r (webhook_id, url, attempts, outcome, status, error, delay)
         WHERE d.webhook_id = r.webhook_id AND d.url = r.url AND d.attempts = r.attempts
           AND d.outcome IS NULL",
    )
    .bind(&ids)
    .bind(&urls)
    .bind(&attempts)
    .bind(&outcomes)
    .bind(&statuses)
    .bind(&errors)
    .bind(&delays)
    .execute(pool)
    .await?;
    Ok(())
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
