//! The outbox's first step: events the other workers recorded (`state = 'new'`, see
//! `crate::webhook_events`) are looked at once. A recipient online at that moment gets nothing
//! (`skipped`, "online"); otherwise the event is `queued` with one delivery row per configured
//! URL, in the same transaction. Rows are taken `FOR UPDATE SKIP LOCKED`, so any number of notify
//! instances each take different events, and an instance that dies before committing leaves its
//! events `new` for the next one.

use super::presence;
use async_nats::jetstream::kv;
use sqlx::PgPool;

/// Events looked at per transaction.
pub const BATCH: i64 = 500;

/// Why fan-out stopped: the database or the presence bucket.
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Presence(#[from] presence::PresenceError),
}

/// Takes up to [`BATCH`] new events; returns how many were taken.
pub async fn run_once(
    pool: &PgPool,
    store: &kv::Store,
    urls: &[String],
) -> Result<usize, FanOutError> {
    let mut tx = pool.begin().await?;
    let events: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT webhook_id, user_id, event_type FROM webhook_events WHERE state = 'new'
         ORDER BY occurred_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if events.is_empty() {
        return Ok(0);
    }
    if urls.is_empty() {
        // Without WEBHOOK_URL nothing is sent; the rows are marked so they are not read again.
        let ids: Vec<&str> = events.iter().map(|(id, _, _)| id.as_str()).collect();
        skip(&mut tx, &ids, "no_url").await?;
        tx.commit().await?;
        return Ok(events.len());
    }
    let online = presence::online_among(
        store,
        events
            .iter()
            .filter_map(|(_, user_id, _)| user_id.clone())
            .collect::<std::collections::HashSet<_>>(),
    )
    .await?;
    let (skipped, queued): (Vec<_>, Vec<_>) = events
        .iter()
        .partition(|(_, user_id, _)| user_id.as_ref().is_some_and(|id| online.contains(id)));
    let skipped_ids: Vec<&str> = skipped.iter().map(|(id, _, _)| id.as_str()).collect();
    skip(&mut tx, &skipped_ids, "online").await?;
    let queued_ids: Vec<&str> = queued.iter().map(|(id, _, _)| id.as_str()).collect();
    queue(&mut tx, &queued_ids, urls).await?;
    tx.commit().await?;
    for (_, _, event_type) in &skipped {
        metrics::counter!("webhook_events_total", "type" => event_type.clone(), "outcome" => "skipped_online").increment(1);
    }
    for (_, _, event_type) in &queued {
        metrics::counter!("webhook_events_total", "type" => event_type.clone(), "outcome" => "queued").increment(1);
    }
    Ok(events.len())
}

async fn skip(tx: &mut sqlx::PgConnection, ids: &[&str], reason: &str) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE webhook_events SET state = 'skipped', skipped_reason = $2
         WHERE webhook_id = ANY($1)",
    )
    .bind(ids)
    .bind(reason)
    .execute(tx)
    .await?;
    Ok(())
}

/// Marks events queued and creates their deliveries, one per URL.
pub async fn queue(
    tx: &mut sqlx::PgConnection,
    ids: &[&str],
    urls: &[String],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH queued AS (
             UPDATE webhook_events SET state = 'queued' WHERE webhook_id = ANY($1)
             RETURNING webhook_id)
         INSERT INTO webhook_deliveries (webhook_id, url)
         SELECT queued.webhook_id, url FROM queued CROSS JOIN unnest($2::text[]) AS url
         ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(urls)
    .execute(tx)
    .await?;
    Ok(())
}
