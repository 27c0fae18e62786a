//! The expiry worker: every `EXPIRY_SWEEP_SECS`, the instance holding that period's lease deletes
//! expired chat messages in small batches (short transactions, no long table locks) and prunes the
//! bookkeeping tables (handled frames and chat cursors older than a day, past any redelivery).

use crate::lease::Leases;
use sqlx::PgPool;
use std::time::Duration;

const BATCH: i64 = 1000;
const LEASE: &str = "expiry-sweep";

pub async fn run(nats: async_nats::Client, pool: PgPool, period: Duration) -> anyhow::Result<()> {
    let leases = Leases::open(&nats).await?;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match leases
            .try_acquire(LEASE, period.saturating_sub(Duration::from_millis(200)))
            .await
        {
            Ok(true) => {
                if let Err(error) = sweep(&pool).await {
                    tracing::warn!(%error, "expiry sweep failed; next period retries");
                }
            }
            Ok(false) => tracing::debug!("another instance sweeps this period"),
            Err(error) => tracing::warn!(%error, "cannot take the sweep lease"),
        }
    }
}

/// One sweep; returns the number of chat messages deleted.
pub async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let deleted = delete_in_batches(
        pool,
        "DELETE FROM chat_messages WHERE message_id IN (
             SELECT message_id FROM chat_messages WHERE expires_at <= now() LIMIT $1)",
    )
    .await?;
    if deleted > 0 {
        tracing::info!(deleted, "expired chat messages deleted");
    }
    metrics::counter!("expiry_messages_deleted_total").increment(deleted);
    Ok(deleted)
}

/// Runs a `DELETE ... LIMIT $1` statement until it deletes less than a batch: each batch is its
/// own short transaction, so the table is never locked for long.
async fn delete_in_batches(pool: &PgPool, statement: &'static str) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let batch = sqlx::query(statement)
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
