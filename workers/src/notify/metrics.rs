//! The outbox as an operator watches it (contract section 13), besides the counters the other
//! files keep (`webhook_deliveries_total{outcome,url}`, `webhook_events_total{type,outcome}`,
//! `webhook_attempt_seconds`, `webhook_delivery_delay_seconds`): every few seconds each instance
//! reads, per URL, the pending deliveries (`webhook_queue_depth`) and the age of the oldest one
//! (`webhook_oldest_pending_seconds`), and the events not yet fanned out
//! (`webhook_events_unqueued`). The readings are the database's, so every instance reports the
//! same numbers; one partial-index scan each.

use sqlx::PgPool;
use std::time::Duration;

/// How often the gauges are read.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// A URL as a metric label: without its query and fragment, which may hold credentials.
pub fn url_label(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

/// Reads the gauges once.
pub async fn refresh(pool: &PgPool, urls: &[String]) -> Result<(), sqlx::Error> {
    let pending: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT url, count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
         FROM webhook_deliveries WHERE outcome IS NULL GROUP BY url",
    )
    .fetch_all(pool)
    .await?;
    // A configured URL with nothing pending reads 0, not its last value.
    for url in urls {
        let label = url_label(url);
        metrics::gauge!("webhook_queue_depth", "url" => label.clone()).set(0.0);
        metrics::gauge!("webhook_oldest_pending_seconds", "url" => label).set(0.0);
    }
    for (url, depth, oldest) in pending {
        let label = url_label(&url);
        metrics::gauge!("webhook_queue_depth", "url" => label.clone()).set(depth as f64);
        metrics::gauge!("webhook_oldest_pending_seconds", "url" => label).set(oldest);
    }
    let unqueued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE state = 'new'")
            .fetch_one(pool)
            .await?;
    metrics::gauge!("webhook_events_unqueued").set(unqueued as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_labels_drop_the_query_and_fragment() {
        assert_eq!(
            super::url_label("https://push.example/hook?token=secret#x"),
            "https://push.example/hook"
        );
        assert_eq!(
            super::url_label("http://127.0.0.1:9/h"),
            "http://127.0.0.1:9/h"
        );
    }
}
