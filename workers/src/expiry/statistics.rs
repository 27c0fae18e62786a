//! Keeps the planner's statistics current. Autovacuum does this on its own where it runs, but it
//! may be off (it is on this project's CI machine), and then a table is never analysed: the
//! workers' prepared statements keep the plans chosen while their tables were empty (sequential
//! scans) while `chat_messages` grows by a thousand rows a second, and every receipt reads the
//! whole table. A table is analysed when its rows changed by more than 50 plus half its size
//! since its last analysis: plans go wrong when a table's size changes by a large factor, and
//! every analysis is a burst of work that shows in the chat's p99. (Autovacuum's own rule is 10 %;
//! where it runs, this finds nothing to do.) An `ANALYZE` also invalidates the cached plans that
//! read the table, so they are chosen again.

use sqlx::PgPool;
use std::time::Duration;

/// How often the tables are checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Analyses every table of the database whose statistics went stale; returns their names.
pub async fn refresh(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let stale: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, relname::text FROM pg_stat_user_tables
         WHERE n_mod_since_analyze > 50 + 0.5 * n_live_tup",
    )
    .fetch_all(pool)
    .await?;
    let mut analysed = Vec::with_capacity(stale.len());
    for (schema, table) in stale {
        let mut tx = pool.begin().await?;
        // A sample of 3,000 rows instead of 30,000: the plans here need row counts and rough
        // distributions, and a full-size sample of a large table costs ~100 ms of a core, a stall
        // that shows in the chat's p99 when it comes every few seconds.
        sqlx::query("SET LOCAL default_statistics_target = 10")
            .execute(&mut *tx)
            .await?;
        let statement = format!("ANALYZE {}.{}", quote(&schema), quote(&table));
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        analysed.push(table);
    }
    if !analysed.is_empty() {
        tracing::debug!(tables = ?analysed, "statistics refreshed");
    }
    Ok(analysed)
}

/// An identifier as SQL text (the names come from the catalog, but may hold any character).
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
