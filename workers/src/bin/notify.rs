//! The notify worker binary: delivers the webhook outbox (contract section 13), signed, with
//! retries, to `WEBHOOK_URL`; any number of instances share the work.

use clap::Parser;
use shared::config::{DatabaseConfig, MetricsConfig, NatsConfig};
use workers::notify::{NotifyConfig, Settings};

#[derive(Parser)]
#[command(
    name = "notify",
    about = "Tells the operator's backend, by signed webhooks, which offline user needs a push"
)]
struct Config {
    #[command(flatten)]
    nats: NatsConfig,
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    metrics: MetricsConfig,
    #[command(flatten)]
    notify: NotifyConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let settings = match Settings::from_config(&config.notify) {
        Ok(settings) => settings,
        Err(error) => {
            // As the other workers' start-up checks: a clear message and exit code 2.
            eprintln!("notify cannot start: {error}");
            std::process::exit(2);
        }
    };
    let (nats, pool) = workers::startup::connect("notify", &config.nats, &config.database).await;
    workers::startup::serve_metrics("notify", &config.metrics);
    let (stop, stopping) = workers::startup::stop_signal();
    workers::startup::run_until_stopped(workers::notify::run(nats, pool, settings, stopping), stop)
        .await
}
