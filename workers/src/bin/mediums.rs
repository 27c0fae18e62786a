//! The mediums worker binary: `medium_selection` and `medium_share`.

use clap::Parser;
use shared::config::{DatabaseConfig, NatsConfig, WorkerConfig};

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
    worker: WorkerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (nats, pool) =
        workers::startup::connect("mediums", &config.nats, Some(&config.database)).await;
    let Some(pool) = pool else {
        anyhow::bail!("no database pool");
    };
    tokio::select! {
        result = workers::mediums::run(nats, pool, config.worker.worker_concurrency) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
