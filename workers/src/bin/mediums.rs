//! The mediums worker binary: `medium_selection` and `medium_share`.

use clap::Parser;
use shared::config::{DatabaseConfig, MetricsConfig, NatsConfig, WorkerConfig};

#[derive(Parser)]
#[command(
    name = "mediums",
    about = "Medium selection (seeker) and sharing (provider)"
)]
struct Config {
    #[command(flatten)]
    nats: NatsConfig,
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    metrics: MetricsConfig,
    #[command(flatten)]
    worker: WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (nats, pool) = workers::startup::connect("mediums", &config.nats, &config.database).await;
    workers::startup::serve_metrics("mediums", &config.metrics);
    let (stop, stopping) = workers::startup::stop_signal();
    workers::startup::run_until_stopped(
        workers::mediums::run(nats, pool, config.worker, stopping),
        stop,
    )
    .await
}
