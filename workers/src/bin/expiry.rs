//! The expiry worker binary: deletes expired chat messages and expires unanswered work orders,
//! once per period across instances.

use clap::Parser;
use shared::config::{DatabaseConfig, MetricsConfig, NatsConfig};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "expiry",
    about = "Deletes expired chat messages and old bookkeeping rows; expires unanswered work orders"
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
    /// A work order still pending this long after its creation expires (checked every second).
    #[arg(long, env = "WORK_ORDER_TTL_SECS", default_value_t = 900)]
    work_order_ttl_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (nats, pool) = workers::startup::connect("expiry", &config.nats, &config.database).await;
    workers::startup::serve_metrics("expiry", &config.metrics);
    let period = Duration::from_secs(config.expiry_sweep_secs.max(1));
    let work_order_ttl = Duration::from_secs(config.work_order_ttl_secs.max(1));
    let (stop, stopping) = workers::startup::stop_signal();
    workers::startup::run_until_stopped(
        workers::expiry::run(nats, pool, period, work_order_ttl, stopping),
        stop,
    )
    .await
}
