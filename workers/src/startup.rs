//! Start-up shared by the worker binaries: logging, then NATS and Postgres with the contract's
//! checks (a clear message naming the fix, and exit code 2, when something is wrong).

use shared::config::{DatabaseConfig, NatsConfig};
use sqlx::PgPool;

/// Connects to NATS (checked, and the stream/consumers/KV provisioned) and to Postgres (checked).
pub async fn connect(
    name: &'static str,
    nats: &NatsConfig,
    database: &DatabaseConfig,
) -> (async_nats::Client, PgPool) {
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
    match shared::db::connect_checked(&database.database_url, database.database_pool_size).await {
        Ok(pool) => (client, pool),
        Err(error) => fail(name, &error),
    }
}

/// Runs a worker until it fails or the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn run_until_stopped(
    worker: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        result = worker => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
        () = terminate => Ok(()),
    }
}

fn fail(name: &str, error: &dyn std::fmt::Display) -> ! {
    tracing::error!("{name} cannot start: {error}");
    eprintln!("{name} cannot start: {error}");
    std::process::exit(2)
}
