//! The distance worker binary: live distance between the two parties of a session, and the
//! provider's arrival (contract section 14).

use clap::Parser;
use shared::config::{DatabaseConfig, MetricsConfig, NatsConfig};
use std::time::Duration;
use workers::distance::{self, ArrivalRule, DistanceConfig};

#[derive(Parser)]
#[command(
    name = "distance",
    about = "Locations, haversine distance, periodic distance updates, arrival"
)]
struct Config {
    #[command(flatten)]
    nats: NatsConfig,
    #[command(flatten)]
    database: DatabaseConfig,
    #[command(flatten)]
    metrics: MetricsConfig,
    /// Seconds between periodic distance updates of a live session.
    #[arg(long, env = "DISTANCE_TICK_SECS", default_value_t = 30.0)]
    distance_tick_secs: f64,
    /// A party must move at least this many meters to trigger an immediate update.
    #[arg(long, env = "DISTANCE_MIN_MOVE_M", default_value_t = 50.0)]
    distance_min_move_m: f64,
    /// The provider has arrived when within this many meters of the seeker on two consecutive
    /// fixes; it re-arms beyond this plus max(50, half of it).
    #[arg(long, env = "ARRIVAL_RADIUS_M", default_value_t = 100.0, value_parser = positive_meters)]
    arrival_radius_m: f64,
}

/// A distance knob: a finite number of meters above zero (a radius of 0 would never fire).
fn positive_meters(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(meters) if meters.is_finite() && meters > 0.0 => Ok(meters),
        _ => Err(format!("expected a number of meters above 0, got {text:?}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let (nats, pool) = workers::startup::connect("distance", &config.nats, &config.database).await;
    workers::startup::serve_metrics("distance", &config.metrics);
    let distance_config = DistanceConfig {
        tick: Duration::from_secs_f64(config.distance_tick_secs.max(0.1)),
        min_move_meters: config.distance_min_move_m,
        arrival: ArrivalRule::new(config.arrival_radius_m),
    };
    let (stop, stopping) = workers::startup::stop_signal();
    workers::startup::run_until_stopped(distance::run(nats, pool, distance_config, stopping), stop)
        .await
}
