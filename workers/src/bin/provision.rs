//! Prepares a fresh environment: applies the Postgres migrations and creates (or updates) the
//! JetStream stream, consumers and KV buckets defined in `nats/`. Idempotent.

use clap::Parser;
use shared::config::{DatabaseConfig, NatsConfig};

#[derive(Parser)]
#[command(
    name = "provision",
    about = "Apply migrations and create the NATS stream, consumers and KV buckets"
)]
struct Config {
    #[command(flatten)]
    nats: NatsConfig,
    #[command(flatten)]
    database: DatabaseConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    shared::telemetry::init("provision");
    shared::db::migrate(&config.database.database_url).await?;
    let nats = shared::nats::connect_checked(&config.nats.nats_url, "provision").await?;
    shared::nats::provision(&nats).await?;
    println!("provisioned: migrations applied, stream INBOUND, consumers and KV buckets ready");
    Ok(())
}
