//! The outbox does not grow forever: events older than `WEBHOOK_RETENTION_HOURS` (72) whose
//! deliveries are all finished (or that were skipped) are deleted, with their deliveries, in
//! small batches. Pending ones stay whatever their age: nothing is dropped unsent.

use sqlx::PgPool;
use std::time::Duration;

/// How often old rows are looked for.
pub const PURGE_EVERY: Duration = Duration::from_secs(60);
const BATCH: i64 = 1000;

/// Deletes finished events older than `retention`; returns how many.
pub async fn purge(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let batch = sqlx::query(
            "DELETE FROM webhook_events WHERE webhook_id IN (
                 SELECT e.webhook_id FROM webhook_events e
                 WHERE e.occurred_at < now() - make_interval(secs => $1) AND e.state <> 'new'
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                   WHERE d.webhook_id = e.webhook_id AND d.outcome IS NULL)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(retention.as_secs_f64())
        .bind(BATCH)
        .execute(pool)
        .await?
        .rows_affected();
        deleted += batch;
        if batch < BATCH as u64 {
            return Ok(deleted);
        }
    }
}
