//! The distance worker: `location_update` frames (core NATS, latest wins), `distance_update` to
//! both parties when both positions become known, when a party moved at least
//! `DISTANCE_MIN_MOVE_M` from the position used for the last update, and every
//! `DISTANCE_TICK_SECS` while the session is live.
//!
//! How it scales: sessions are partitioned over the running instances (see `membership`). Every
//! instance receives every location frame but only the session's owner parses and handles it,
//! keeping the session's positions in memory, so a frame costs no database read. The owner alone
//! ticks its sessions, so each session gets one tick per period however many instances run. When
//! an instance dies its heartbeat expires within seconds and the survivors take its sessions over,
//! loading their last persisted positions in one query; the next tick then comes from the new
//! owner, so ticks are delayed by at most the heartbeat expiry, not lost.
//!
//! What is written when: positions and the last distance go to `work_sessions` once per tick
//! period for all owned sessions, in one batched statement (and when sessions change owner), never
//! per frame.
//!
//! Arrival (contract section 14, `arrival`): the provider's fixes also feed the arrival rule, whose
//! run of fixes lives in memory beside the positions; Postgres is asked only when a run completes
//! (the conditional UPDATE that makes the announcement exactly once across instances) or when the
//! provider leaves after one (the UPDATE that re-arms it): a few statements per session, not per
//! frame.

mod arrival;
mod location_update;
mod membership;
mod tick;
mod tracker;

pub use arrival::ArrivalRule;

use futures::StreamExt;
use shared::subjects::{self, Topic};
use sqlx::PgPool;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct DistanceConfig {
    pub tick: Duration,
    pub min_move_meters: f64,
    /// `ARRIVAL_RADIUS_M` and the exit distance derived from it.
    pub arrival: ArrivalRule,
}

pub async fn run(
    nats: async_nats::Client,
    pool: PgPool,
    config: DistanceConfig,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut membership = membership::Membership::join(&nats).await?;
    let mut frames = nats
        .subscribe(subjects::session_wildcard(Topic::Location))
        .await?;
    let mut ended = nats.subscribe(subjects::SESSIONS_ENDED).await?;
    let mut tracker = tracker::Tracker::default();
    let mut ticks = tokio::time::interval(config.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut heartbeats = tokio::time::interval(membership::HEARTBEAT);
    tracing::info!(
        instance = membership.me(),
        tick_secs = config.tick.as_secs_f64(),
        arrival_radius_m = config.arrival.radius_meters(),
        "distance worker running"
    );
    loop {
        tokio::select! {
            Some(frame) = frames.next() => {
                let Some(session_id) = subjects::session_id_of(frame.subject.as_str()) else { continue };
                if membership.owns(&session_id) {
                    location_update::handle(&mut tracker, &pool, &nats, &config, session_id, frame).await;
                }
            }
            Some(notice) = ended.next() => {
                if let Some(session_id) = subjects::session_id_of(notice.subject.as_str()) {
                    tracker.forget(&session_id);
                }
            }
            _ = ticks.tick() => {
                tick::run(&mut tracker, &pool, &nats).await;
            }
            _ = heartbeats.tick() => {
                match membership.refresh().await {
                    Ok(true) => tick::rebalance(&mut tracker, &membership, &pool).await,
                    Ok(false) => {}
                    Err(error) => tracing::warn!(%error, "membership heartbeat failed"),
                }
            }
            // Positions live in memory and come again every few seconds: nothing to finish.
            _ = stopping.changed() => {
                membership.leave().await;
                return Ok(());
            }
        }
    }
}
