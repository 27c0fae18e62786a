//! The chat worker binary: anonymous chat, receipts, typing, resume and history.

use clap::Parser;
use shared::config::{DatabaseConfig, MetricsConfig, NatsConfig, WorkerConfig};
use std::time::Duration;
use workers::chat::{self, Chat};

#[derive(Parser)]
#[command(
    name = "chat",
    about = "Chat messages, receipts, typing, resume and history"
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
    /// A typing indicator not refreshed for this long clears itself.
    #[arg(long, env = "TYPING_TTL_SECS", default_value_t = 5)]
    typing_ttl_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (nats, pool) = workers::startup::connect("chat", &config.nats, &config.database).await;
    workers::startup::serve_metrics("chat", &config.metrics);
    let worker = Chat::new(
        nats,
        pool,
        Duration::from_secs(config.typing_ttl_secs.max(1)),
    )
    .await?;
    let (stop, stopping) = workers::startup::stop_signal();
    workers::startup::run_until_stopped(chat::run(worker, config.worker, stopping), stop).await
}
