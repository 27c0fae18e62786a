//! Start-up shared by the worker binaries: logging, then NATS and Postgres with the contract's
//! checks (a clear message naming the fix, and exit code 2, when something is wrong).

use shared::config::{DatabaseConfig, NatsConfig};
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::watch;

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

/// Serves this worker's metrics (batch sizes and times, dead letters, partition restarts...) in
/// the Prometheus text format at `METRICS_ADDR`, labelled with the worker kind, when it is set;
/// `worker_up` says the instance runs.
pub fn serve_metrics(name: &'static str, config: &shared::config::MetricsConfig) {
    if config.metrics_addr.is_empty() {
        return;
    }
    let address: std::net::SocketAddr = match config.metrics_addr.parse() {
        Ok(address) => address,
        Err(error) => fail(
            name,
            &format!(
                "METRICS_ADDR {:?} is not host:port: {error}",
                config.metrics_addr
            ),
        ),
    };
    let installed = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(address)
        .add_global_label("worker", name)
        .install();
    match installed {
        Ok(()) => {
            metrics::gauge!("worker_up").set(1.0);
            tracing::info!(%address, "metrics at http://{address}/metrics");
        }
        Err(error) => fail(name, &format!("cannot serve metrics at {address}: {error}")),
    }
}

/// How long a stopping worker may take to finish the batches in hand.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs a worker until it fails or the process is asked to stop (Ctrl-C or SIGTERM). On a signal,
/// `stopping` turns true and the worker gets `STOP_GRACE` to finish what it holds (the JetStream
/// runtime applies and acks its batches in hand, then returns).
pub async fn run_until_stopped(
    worker: impl std::future::Future<Output = anyhow::Result<()>>,
    stopping: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(worker);
    tokio::select! {
        result = &mut worker => return result,
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("stopping");
    let _ = stopping.send(true);
    match tokio::time::timeout(STOP_GRACE, worker).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("did not stop within {STOP_GRACE:?}; exiting anyway");
            Ok(())
        }
    }
}

/// The stop signal handed to a worker and to `run_until_stopped`.
pub fn stop_signal() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

fn fail(name: &str, error: &dyn std::fmt::Display) -> ! {
    tracing::error!("{name} cannot start: {error}");
    eprintln!("{name} cannot start: {error}");
    std::process::exit(2)
}
