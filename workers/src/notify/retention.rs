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
    shared::db::delete_in_batches(pool, BATCH, || {
        sqlx::query(
            "DELETE FROM webhook_events WHERE webhook_id IN (
                 SELECT e.webhook_id FROM webhook_events e
                 WHERE e.occurred_at < now() - make_interval(secs => $1) AND e.state <> 'new'
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                   WHERE d.webhook_id = e.webhook_id AND d.outcome IS NULL)
                 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(retention.as_secs_f64())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of its own on the machine's Postgres (`DATABASE_ADMIN_URL`, as the system tests
    /// use), with the migrations applied.
    async fn scratch_database() -> (PgPool, String, String) {
        let admin = std::env::var("DATABASE_ADMIN_URL")
            .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/postgres"));
        let name = format!("workers_retention_{}", uuid::Uuid::new_v4().simple());
        let (server, _) = admin.rsplit_once('/').expect("a database part");
        let url = format!("{server}/{name}");
        shared::db::migrate(&url).await.expect("migrations");
        let pool = PgPool::connect(&url).await.expect("connect");
        (pool, admin, name)
    }

    /// An event `age_hours` old in `state`, with one delivery finished as `outcome` (None:
    /// pending, and no delivery at all for a `new` event).
    async fn event(pool: &PgPool, id: &str, age_hours: f64, state: &str, outcome: Option<&str>) {
        sqlx::query(
            "INSERT INTO webhook_events (webhook_id, event_type, user_id, role, data, occurred_at, state)
             VALUES ($1, 'work.assigned', 'prov1', 'provider', '{}',
                     now() - make_interval(secs => $2 * 3600), $3)",
        )
        .bind(id)
        .bind(age_hours)
        .bind(state)
        .execute(pool)
        .await
        .expect("an event");
        if state == "queued" {
            sqlx::query(
                "INSERT INTO webhook_deliveries (webhook_id, url, outcome) VALUES ($1, 'http://r', $2)",
            )
            .bind(id)
            .bind(outcome)
            .execute(pool)
            .await
            .expect("a delivery");
        }
    }

    #[tokio::test]
    async fn only_old_finished_events_are_purged_with_their_deliveries() {
        let (pool, admin, name) = scratch_database().await;
        event(
            &pool,
            "msg_old_delivered",
            80.0,
            "queued",
            Some("delivered"),
        )
        .await;
        event(&pool, "msg_old_given_up", 80.0, "queued", Some("given_up")).await;
        event(&pool, "msg_old_skipped", 80.0, "skipped", None).await;
        event(&pool, "msg_old_pending", 80.0, "queued", None).await;
        event(&pool, "msg_old_new", 80.0, "new", None).await;
        event(
            &pool,
            "msg_recent_delivered",
            1.0,
            "queued",
            Some("delivered"),
        )
        .await;

        let deleted = purge(&pool, Duration::from_secs(72 * 3600))
            .await
            .expect("purged");
        assert_eq!(deleted, 3);
        let left: Vec<String> =
            sqlx::query_scalar("SELECT webhook_id FROM webhook_events ORDER BY webhook_id")
                .fetch_all(&pool)
                .await
                .expect("events");
        assert_eq!(
            left,
            ["msg_old_new", "msg_old_pending", "msg_recent_delivered"]
        );
        let deliveries: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
            .fetch_one(&pool)
            .await
            .expect("deliveries");
        assert_eq!(
            deliveries, 2,
            "the purged events' deliveries went with them"
        );

        pool.close().await;
        if let Ok(admin) = PgPool::connect(&admin).await {
            let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&admin)
                .await;
        }
    }
}
