//! Start-up shared by the worker binaries: logging, then NATS and Postgres with the contract's
//! checks (a clear message naming the fix, and exit code 2, when something is wrong).

use shared::config::{DatabaseConfig, NatsConfig};
use sqlx::PgPool;

/// Connects to NATS (checked, and the stream/consumers/KV provisioned) and to Postgres (checked).
pub async fn connect(
    name: &'static str,
    nats: &NatsConfig,
    database: Option<&DatabaseConfig>,
) -> (async_nats::Client, Option<PgPool>) {
    shared::telemetry::init(name);
    let client = match shared::nats::connect_checked(&nats.nats_url, name).await {
        Ok(client) => client,
        Err(error) => fail(name, &error),
    };
    if let Err(error) = shared::nats::provision(&client).await {
        fail(
            name,
            &format!("cannot create the JetStream stream, consumers or KV buckets: {error}"),
        );
    }
    let pool = match database {
        Some(database) => {
            match shared::db::connect_checked(&database.database_url, database.database_pool_size)
                .await
            {
                Ok(pool) => Some(pool),
                Err(error) => fail(name, &error),
            }
        }
        None => None,
    };
    (client, pool)
}

fn fail(name: &str, error: &dyn std::fmt::Display) -> ! {
    tracing::error!("{name} cannot start: {error}");
    eprintln!("{name} cannot start: {error}");
    std::process::exit(2)
}
