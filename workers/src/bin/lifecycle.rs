//! The lifecycle worker binary: profiles, statuses, work orders, sessions, cancel, finish.

use clap::Parser;
use shared::config::{DatabaseConfig, MetricsConfig, NatsConfig, WorkerConfig};
use std::time::Duration;
use workers::lifecycle::{self, Lifecycle};

#[derive(Parser)]
#[command(
    name = "lifecycle",
    about = "Work orders, sessions, cancel/finish, profiles and statuses"
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
    /// Chat messages are deleted this long after their session ends.
    #[arg(long, env = "CHAT_RETENTION_SECS", default_value_t = 86_400)]
    chat_retention_secs: u64,
    /// A participant whose last socket closed counts as offline after this long (a quick
    /// reconnect within it sends no presence event).
    #[arg(long, env = "PRESENCE_GRACE_SECS", default_value_t = 5.0)]
    presence_grace_secs: f64,
    /// Pending work orders one seeker may hold in all (besides one per provider); one more is
    /// answered 409 "too many pending work orders".
    #[arg(long, env = "WORK_ORDER_MAX_PENDING", default_value_t = 5)]
    work_order_max_pending: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (nats, pool) = workers::startup::connect("lifecycle", &config.nats, &config.database).await;
    workers::startup::serve_metrics("lifecycle", &config.metrics);
    let presence = match lifecycle::presence::open(&nats).await {
        Ok(presence) => presence,
        Err(error) => {
            eprintln!("lifecycle: {error}");
            std::process::exit(2);
        }
    };
    let worker = Lifecycle {
        nats,
        pool,
        chat_retention: Duration::from_secs(config.chat_retention_secs),
        presence,
        presence_grace: Duration::from_secs_f64(config.presence_grace_secs.max(0.0)),
        work_order_max_pending: i64::from(config.work_order_max_pending),
    };
    let (stop, stopping) = workers::startup::stop_signal();
    workers::startup::run_until_stopped(lifecycle::run(worker, config.worker, stopping), stop).await
}
