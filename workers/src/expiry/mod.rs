//! The expiry worker, the database's caretaker: every `EXPIRY_SWEEP_SECS`, the instance holding
//! that period's lease deletes expired chat messages in small batches (short transactions, no long
//! table locks); every second, the instance holding that lease expires the work orders pending
//! for `WORK_ORDER_TTL_SECS` (`work_orders`); every 10 s, the instance holding that lease
//! refreshes stale planner statistics (`statistics`).

mod statistics;
mod work_orders;

use crate::lease::Leases;
use sqlx::PgPool;
use std::time::Duration;

const BATCH: i64 = 1000;
const LEASE: &str = "expiry-sweep";
const STATISTICS_LEASE: &str = "expiry-statistics";
const WORK_ORDERS_LEASE: &str = "expiry-work-orders";

/// Sweeps chat messages once per `period`, expires work orders pending for `work_order_ttl`
/// every `work_orders::SWEEP_EVERY` and refreshes statistics every `statistics::CHECK_EVERY` (each
/// when this instance holds its lease) until `stopping` turns true; work under way is finished
/// first.
pub async fn run(
    nats: async_nats::Client,
    pool: PgPool,
    period: Duration,
    work_order_ttl: Duration,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let leases = Leases::open(&nats).await?;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut statistics_ticks = tokio::time::interval(statistics::CHECK_EVERY);
    statistics_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut work_order_ticks = tokio::time::interval(work_orders::SWEEP_EVERY);
    work_order_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = work_order_ticks.tick() => {
                // The shortest lease there is (1 s): held for about one tick, so one instance
                // sweeps at a time, and a dead holder delays the next sweep by a second or two.
                match leases.try_acquire(WORK_ORDERS_LEASE, work_orders::SWEEP_EVERY / 2).await {
                    Ok(true) => {
                        if let Err(error) = work_orders::sweep(&nats, &pool, work_order_ttl).await {
                            tracing::warn!(%error, "work order expiry failed; the next sweep retries");
                        }
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "cannot take the work order lease"),
                }
                continue;
            }
            _ = statistics_ticks.tick() => {
                // Well within the period: the server drops an expired lease a little late.
                let lease_for = statistics::CHECK_EVERY / 2;
                match leases.try_acquire(STATISTICS_LEASE, lease_for).await {
                    Ok(true) => {
                        if let Err(error) = statistics::refresh(&pool).await {
                            tracing::warn!(%error, "cannot refresh statistics; the next check retries");
                        }
                    }
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "cannot take the statistics lease"),
                }
                continue;
            }
            _ = stopping.changed() => return Ok(()),
        }
        match leases
            // Half the period: the server drops an expired lease a little late, and a lease of
            // nearly the period could still be there at the next tick (a sweep skipped).
            .try_acquire(LEASE, period / 2)
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
    let deleted = shared::db::delete_in_batches(pool, BATCH, || {
        // The outer condition is checked again on the row as it stands when it is deleted: a
        // dispute opened meanwhile clears `expires_at` (keeps the messages), and that wins.
        sqlx::query(
            "DELETE FROM chat_messages WHERE message_id IN (
                 SELECT message_id FROM chat_messages WHERE expires_at <= now() LIMIT $1)
               AND expires_at <= now()",
        )
    })
    .await?;
    if deleted > 0 {
        tracing::info!(deleted, "expired chat messages deleted");
    }
    metrics::counter!("expiry_messages_deleted_total").increment(deleted);
    Ok(deleted)
}
