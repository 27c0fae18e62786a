//! The expiry worker binary: deletes expired chat messages, once per period across instances.

use clap::Parser;
use shared::config::{DatabaseConfig, MetricsConfig, NatsConfig};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "expiry",
    about = "Deletes expired chat messages and old bookkeeping rows"
)]
struct Config {
    #[command(flatten)]
    nats: NatsConfig,
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    metrics: MetricsConfig,
    /// Seconds between sweeps.
    #[arg(long, env = "EXPIRY_SWEEP_SECS", default_value_t = 60)]
    expiry_sweep_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (nats, pool) = workers::startup::connect("expiry", &config.nats, &config.database).await;
    workers::startup::serve_metrics("expiry", &config.metrics);
    let period = Duration::from_secs(config.expiry_sweep_secs.max(1));
    let (stop, stopping) = workers::startup::stop_signal();
    workers::startup::run_until_stopped(workers::expiry::run(nats, pool, period, stopping), stop)
        .await
}
