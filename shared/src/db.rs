//! Postgres: the embedded migrations, and a start-up check that the database answers and that its
//! schema is not behind this binary's migrations.

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;

/// The migrations in `migrations/`, compiled in.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DatabaseCheckError {
    #[error(
        "cannot reach Postgres at {url}: {source}. Start it (scripts/stack.sh does) or set DATABASE_URL"
    )]
    Unreachable { url: String, source: sqlx::Error },
    #[error(
        "the database schema is behind (at migration {found}, this build needs {needed}): run `scripts/stack.sh --provision-only` or `cargo run -p workers --bin provision`"
    )]
    SchemaBehind { found: i64, needed: i64 },
    #[error("cannot read the schema version: {0}")]
    Query(#[from] sqlx::Error),
}

/// Connects and checks the schema. Every process that uses Postgres calls this at start.
pub async fn connect_checked(url: &str, pool_size: u32) -> Result<PgPool, DatabaseCheckError> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(5))
        // sqlx pings every connection it hands out, a round trip in front of every batch
        // transaction. It already pings each one it takes back (dropping a broken one there),
        // and the worker runtime treats a connection failing mid-batch as an outage to wait out.
        .test_before_acquire(false)
        .connect(url)
        .await
        .map_err(|source| DatabaseCheckError::Unreachable {
            url: redact(url),
            source,
        })?;
    let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let found: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .unwrap_or(None);
    let found = found.unwrap_or(0);
    if found < needed {
        return Err(DatabaseCheckError::SchemaBehind { found, needed });
    }
    Ok(pool)
}

/// Creates the database if it does not exist, then applies the migrations (used by `provision`
/// and the tests).
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    use sqlx::migrate::MigrateDatabase;
    if !sqlx::Postgres::database_exists(url).await? {
        sqlx::Postgres::create_database(url).await?;
    }
    let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Runs a `DELETE` whose last parameter is a `LIMIT` until a run deletes less than `batch`: each
/// batch is its own short transaction, so a table is never locked for long. `statement` makes
/// the query with its other parameters bound; the batch size is bound after them.
pub async fn delete_in_batches<'q>(
    pool: &PgPool,
    batch: i64,
    statement: impl Fn() -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let rows = statement().bind(batch).execute(pool).await?.rows_affected();
        deleted += rows;
        if rows < batch.max(1) as u64 {
            return Ok(deleted);
        }
    }
}
