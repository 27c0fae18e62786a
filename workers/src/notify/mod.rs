//! The notify worker (contract section 13): tells the operator's backend, by signed webhooks,
//! which offline user needs a push and why. Postgres is the outbox; any number of instances share
//! it, each event is delivered by one of them.
//!
//! - `fan_out`: events the other workers recorded with their cause (`crate::webhook_events`)
//!   become one delivery per URL, unless the recipient is online (`presence`).
//! - `unread`: `message.unread`, derived once a second from the undelivered messages.
//! - `delivery`: claims due deliveries, POSTs them signed (`shared::webhooks`), and records the outcome
//!   and the next attempt (`policy`).
//! - `metrics`: queue depth and oldest pending age per URL; `retention`: old rows go.
//!
//! Loops: deliveries run on their own task (a slow receiver never holds the sweeps up), at most
//! `WEBHOOK_CONCURRENCY` requests at a time; fan-out and the unread sweep share another.

pub mod delivery;
pub mod fan_out;
pub mod metrics;
pub mod policy;
pub mod presence;
pub mod retention;
pub mod unread;

use async_nats::jetstream::kv;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};

/// The notify worker's settings (environment names as in the contract and README).
#[derive(clap::Args, Clone, Debug)]
pub struct NotifyConfig {
    /// Where webhooks go: one or more URLs, comma-separated. Empty: nothing is sent.
    #[arg(long, env = "WEBHOOK_URL", default_value = "")]
    pub webhook_url: String,
    /// `whsec_<base64>`; two separated by a space while rotating.
    #[arg(long, env = "WEBHOOK_SECRET", default_value = "")]
    pub webhook_secret: String,
    /// A message still undelivered this long after it was sent makes a `message.unread`.
    #[arg(long, env = "PUSH_AFTER_SECS", default_value_t = 10.0)]
    pub push_after_secs: f64,
    /// At most one `message.unread` per recipient and session per this many seconds.
    #[arg(long, env = "PUSH_COALESCE_SECS", default_value_t = 60.0)]
    pub push_coalesce_secs: f64,
    /// 1: `message.unread` carries the first 100 characters of the text as `preview`.
    #[arg(long, env = "WEBHOOK_INCLUDE_PREVIEW", default_value_t = 0)]
    pub webhook_include_preview: u8,
    /// Seconds before each retry (default: the contract's 5,300,1800,7200,18000,36000,36000).
    #[arg(long, env = "WEBHOOK_RETRY_SCHEDULE", default_value = "")]
    pub webhook_retry_schedule: String,
    /// Timeout of one request, connection included.
    #[arg(long, env = "WEBHOOK_TIMEOUT_SECS", default_value_t = 10.0)]
    pub webhook_timeout_secs: f64,
    /// How long a claimed delivery is this instance's (longer than the timeout): an instance
    /// that dies mid-request holds its deliveries this long at most.
    #[arg(long, env = "WEBHOOK_CLAIM_SECS", default_value_t = 30.0)]
    pub webhook_claim_secs: f64,
    /// Requests in flight per instance at most.
    #[arg(long, env = "WEBHOOK_CONCURRENCY", default_value_t = 64)]
    pub webhook_concurrency: usize,
    /// How often new events and due deliveries are looked for, when there were none.
    #[arg(long, env = "WEBHOOK_POLL_MS", default_value_t = 200)]
    pub webhook_poll_ms: u64,
    /// Finished events older than this are deleted.
    #[arg(long, env = "WEBHOOK_RETENTION_HOURS", default_value_t = 72)]
    pub webhook_retention_hours: u64,
}

/// What is wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("WEBHOOK_SECRET: {0}")]
    Secret(#[from] shared::webhooks::SecretError),
    #[error(transparent)]
    Schedule(#[from] policy::ScheduleError),
    #[error("WEBHOOK_URL {0:?} is not an http(s) URL")]
    Url(String),
    #[error("{0} must be a number of seconds > 0")]
    Seconds(&'static str),
    #[error("WEBHOOK_CLAIM_SECS must exceed WEBHOOK_TIMEOUT_SECS (a claim outlives its request)")]
    ClaimShorterThanTimeout,
}

/// The checked settings.
#[derive(Clone)]
pub struct Settings {
    pub urls: Vec<String>,
    /// None only when no URL is configured.
    pub signer: Option<shared::webhooks::Signer>,
    pub policy: policy::Policy,
    pub unread: unread::UnreadRule,
    pub timeout: Duration,
    pub claim: Duration,
    pub concurrency: usize,
    pub poll: Duration,
    pub retention: Duration,
}

fn seconds(value: f64, name: &'static str) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or(ConfigError::Seconds(name))
}

impl Settings {
    pub fn from_config(config: &NotifyConfig) -> Result<Settings, ConfigError> {
        let urls: Vec<String> = config
            .webhook_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Url(url.clone()));
            }
        }
        // A secret is needed only when something is sent.
        let signer = if urls.is_empty() {
            None
        } else {
            Some(shared::webhooks::Signer::parse(&config.webhook_secret)?)
        };
        let timeout = seconds(config.webhook_timeout_secs, "WEBHOOK_TIMEOUT_SECS")?;
        let claim = seconds(config.webhook_claim_secs, "WEBHOOK_CLAIM_SECS")?;
        if claim <= timeout {
            return Err(ConfigError::ClaimShorterThanTimeout);
        }
        Ok(Settings {
            urls,
            signer,
            policy: policy::Policy::parse(&config.webhook_retry_schedule)?,
            unread: unread::UnreadRule {
                after: seconds(config.push_after_secs, "PUSH_AFTER_SECS")?,
                coalesce: Duration::try_from_secs_f64(config.push_coalesce_secs)
                    .map_err(|_| ConfigError::Seconds("PUSH_COALESCE_SECS"))?,
                include_preview: config.webhook_include_preview == 1,
            },
            timeout,
            claim,
            concurrency: config.webhook_concurrency.max(1),
            poll: Duration::from_millis(config.webhook_poll_ms.max(10)),
            retention: Duration::from_secs(config.webhook_retention_hours.max(1) * 3600),
        })
    }
}

/// How long the delivery loop waits for a batch's worth of free requests before claiming fewer.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// How often the `message.unread` sweep runs.
const UNREAD_EVERY: Duration = Duration::from_secs(1);

/// Runs the worker until `stopping` turns true; deliveries in flight are finished first.
pub async fn run(
    nats: async_nats::Client,
    pool: PgPool,
    settings: Settings,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let store = crate::lifecycle::presence::open(&nats).await?;
    if settings.urls.is_empty() {
        tracing::warn!("WEBHOOK_URL is not set: events are recorded and skipped, nothing is sent");
    } else {
        tracing::info!(urls = settings.urls.len(), "delivering webhooks");
    }
    let deliveries = tokio::spawn(deliver(pool.clone(), settings.clone(), stopping.clone()));
    let events = events(pool, store, settings, stopping).await;
    let delivered = deliveries
        .await
        .map_err(|error| anyhow::anyhow!("the delivery task ended: {error}"))?;
    events.and(delivered)
}

/// Fan-out, the unread sweep, the gauges and the purge, each on its own clock.
async fn events(
    pool: PgPool,
    store: kv::Store,
    settings: Settings,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut fan_out_ticks = tokio::time::interval(settings.poll);
    let mut unread_ticks = tokio::time::interval(UNREAD_EVERY);
    let mut metrics_ticks = tokio::time::interval(metrics::REFRESH_EVERY);
    let mut purge_ticks = tokio::time::interval(retention::PURGE_EVERY);
    for ticks in [
        &mut fan_out_ticks,
        &mut unread_ticks,
        &mut metrics_ticks,
        &mut purge_ticks,
    ] {
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = stopping.changed() => return Ok(()),
            _ = fan_out_ticks.tick() => loop {
                match fan_out::run_once(&pool, &store, &settings.urls).await {
                    // A full batch: more may be waiting.
                    Ok(taken) if taken as i64 == fan_out::BATCH => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "webhook fan-out failed; retrying");
                        break;
                    }
                }
            },
            _ = unread_ticks.tick() => {
                if settings.urls.is_empty() {
                    continue;
                }
                match unread::sweep(&pool, &store, &settings.urls, &settings.unread).await {
                    Ok(swept) if swept != unread::Swept::default() => {
                        tracing::debug!(?swept, "message.unread sweep");
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "message.unread sweep failed; retrying"),
                }
            }
            _ = metrics_ticks.tick() => {
                if let Err(error) = metrics::refresh(&pool, &settings.urls).await {
                    tracing::warn!(%error, "cannot read the webhook gauges");
                }
            }
            _ = purge_ticks.tick() => {
                match retention::purge(&pool, settings.retention).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "old webhook events deleted"),
                    Err(error) => tracing::warn!(%error, "cannot purge old webhook events"),
                }
            }
        }
    }
}

/// Claims due deliveries while requests are free, each attempt on its own task.
async fn deliver(
    pool: PgPool,
    settings: Settings,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let Some(signer) = settings.signer.clone() else {
        // Nothing to send; wait for the stop.
        let _ = stopping.wait_for(|stop| *stop).await;
        return Ok(());
    };
    let client = delivery::client(settings.timeout)?;
    let (outcomes, recorded) = tokio::sync::mpsc::channel(4096);
    let recorder = tokio::spawn(delivery::record(pool.clone(), recorded));
    let permits = Arc::new(Semaphore::new(settings.concurrency));
    let shared = Arc::new((client, signer, settings.policy.clone()));
    // Claims are taken in batches of at least a quarter of the requests an instance may have in
    // flight (one statement for many rows), as soon as that many are free: never a poll interval
    // of idleness while the queue is full (measured: sleeping instead capped an instance at
    // `WEBHOOK_CONCURRENCY` per `WEBHOOK_POLL_MS`).
    let batch = (settings.concurrency / 4).max(1) as u32;
    while !*stopping.borrow() {
        let enough = tokio::select! {
            enough = tokio::time::timeout(BATCH_WAIT, permits.clone().acquire_many_owned(batch)) => enough,
            _ = stopping.changed() => continue,
        };
        drop(enough);
        if permits.available_permits() == 0 {
            // Still all busy after the wait: take the next one that frees.
            let one = tokio::select! {
                one = permits.clone().acquire_owned() => one,
                _ = stopping.changed() => continue,
            };
            drop(one);
        }
        let free = permits.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            match delivery::claim(&pool, free as i64, settings.claim).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(%error, "cannot claim webhook deliveries; retrying");
                    Vec::new()
                }
            }
        };
        let full = free > 0 && claimed.len() == free;
        for claimed in claimed {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (outcomes, shared) = (outcomes.clone(), shared.clone());
            tokio::spawn(async move {
                let (client, signer, policy) = &*shared;
                let outcome = delivery::attempt(client, signer, policy, claimed).await;
                let _ = outcomes.send(outcome).await;
                drop(permit);
            });
        }
        if !full {
            tokio::select! {
                _ = tokio::time::sleep(settings.poll) => {}
                _ = stopping.changed() => {}
            }
        }
    }
    // Let the attempts in flight record their outcome (run_until_stopped bounds the wait).
    let _ = permits.acquire_many(settings.concurrency as u32).await;
    drop(outcomes);
    let _ = recorder.await;
    Ok(())
}
