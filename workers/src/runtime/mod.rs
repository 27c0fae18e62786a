//! How every JetStream-fed worker (lifecycle, mediums, chat) applies client frames, written once.
//! Handlers know nothing of what is here: they see a batch of parsed frames inside one Postgres
//! transaction and add events to an outbox.
//!
//! - **Partitions own order.** The `INBOUND` stream appends a partition token to every subject
//!   (all frames of one session share one), and each worker kind has one durable consumer per
//!   partition (`chat-07`; its state kept in server memory and recreated when missing). The kind's live instances split the partitions between them by
//!   rendezvous hashing over heartbeats (`ownership`); each partition's consumer pins its one
//!   puller (a priority group), and its owner applies what it pulls strictly in stream order
//!   (`partition`).
//! - **Batches, not frames.** Whatever is ready in a partition, up to `WORKER_BATCH_MAX` frames, is
//!   applied in one transaction, which also advances the partition's applied stream sequence in
//!   `partition_cursors` (`batch`); the ready frames of several partitions share one transaction
//!   (`committer`). That row is the fence: a frame at or below it was applied
//!   already (a redelivery, or a stale owner's copy) and is skipped, so nothing is applied twice.
//!   Commit, publish the events (confirmed by a flush), then ack each frame (a work-queue stream
//!   deletes what is acked); a committed batch that comes back unacked has its stored events
//!   published again.
//! - **Poison frames never block.** A frame refused for its content is answered at once and counts
//!   as applied. Any other failure is retried with backoff, alone, up to `WORKER_MAX_DELIVER` times;
//!   then it goes to `DEAD_LETTER` (`dead_letter`), the sender hears "could not be processed", and
//!   the partition moves on. While Postgres is unreachable nothing is attempted: the partition
//!   stops pulling and resumes when the database answers.

mod batch;
mod committer;
mod dead_letter;
mod fault;
mod ownership;
mod partition;

use crate::outbox::Outbox;
use async_nats::jetstream;
use serde::Deserialize;
use shared::auth::Role;
use shared::config::WorkerConfig;
use shared::frames::ClientFrame;
use shared::headers;
use shared::subjects::Address;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// Who sent a frame, from the headers only the gateway sets.
#[derive(Clone, Debug)]
pub struct Sender {
    pub user_id: String,
    pub role: Role,
    pub conn_id: String,
}

impl Sender {
    /// The sender named by the gateway's headers, if they are all there.
    pub fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Option<Sender> {
        let headers = headers?;
        Some(Sender {
            user_id: headers.get(headers::USER_ID)?.as_str().to_owned(),
            role: Role::parse(headers.get(headers::ROLE)?.as_str())?,
            conn_id: headers.get(headers::CONN_ID)?.as_str().to_owned(),
        })
    }
}

/// Where a frame came from, as a handler sees it.
#[derive(Debug)]
pub struct Inbound {
    pub address: Address,
    pub sender: Sender,
    pub trace_id: Arc<str>,
    /// The frame's `type`, echoed in error frames.
    pub request_type: Option<String>,
    /// Its sequence in the `INBOUND` stream (the order of the partition).
    pub stream_seq: u64,
    /// Its partition of `INBOUND`.
    pub partition: u32,
}

/// A frame of a batch: where it came from, and what it says.
#[derive(Debug)]
pub struct Frame {
    pub inbound: Inbound,
    pub frame: ClientFrame,
}

/// Why a frame was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Bad input or a rule says no: the sender's socket gets an error frame, nothing changes.
    #[error("{error}")]
    Refused {
        error: String,
        session_id: Option<Uuid>,
    },
    /// The database failed; the runtime tells an outage (pause) from a failing frame (retry).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Anything else that may pass: retried with backoff, then dead-lettered.
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
}

impl FrameError {
    pub fn refused(error: impl Into<String>, session_id: Option<Uuid>) -> FrameError {
        FrameError::Refused {
            error: error.into(),
            session_id,
        }
    }
}

/// A worker kind's way of applying a batch of frames, in order, inside one transaction. A frame's
/// refusal goes into the outbox (`Outbox::refuse`) and must leave no write behind; an `Err` rolls
/// the whole batch back.
pub trait BatchHandler: Send + Sync + 'static {
    fn apply(
        &self,
        tx: &mut PgConnection,
        frames: Vec<Frame>,
        outbox: &mut Outbox,
    ) -> impl Future<Output = Result<(), FrameError>> + Send;
}

/// A worker kind that handles one frame at a time (a `match` from frame type to handler module).
/// Wrapped in [`OneByOne`], each frame of a batch runs under a savepoint, so a refusal after a
/// write undoes just that frame.
pub trait FrameHandler: Send + Sync + 'static {
    fn handle(
        &self,
        tx: &mut PgConnection,
        inbound: &Inbound,
        frame: ClientFrame,
        outbox: &mut Outbox,
    ) -> impl Future<Output = Result<(), FrameError>> + Send;
}

/// Applies a batch frame by frame with a [`FrameHandler`].
pub struct OneByOne<H>(pub H);

impl<H: FrameHandler> BatchHandler for OneByOne<H> {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        frames: Vec<Frame>,
        outbox: &mut Outbox,
    ) -> Result<(), FrameError> {
        for Frame { inbound, frame } in frames {
            outbox.begin_frame(&inbound);
            let mark = outbox.len();
            sqlx::query("SAVEPOINT frame").execute(&mut *tx).await?;
            match self.0.handle(tx, &inbound, frame, outbox).await {
                Ok(()) => {
                    sqlx::query("RELEASE SAVEPOINT frame")
                        .execute(&mut *tx)
                        .await?;
                }
                Err(FrameError::Refused { error, session_id }) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT frame")
                        .execute(&mut *tx)
                        .await?;
                    outbox.truncate(mark);
                    outbox.refuse(&inbound, error, session_id, None);
                }
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }
}

/// What one worker kind's runtime needs, shared by its partition tasks.
struct Context<H> {
    kind: &'static str,
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    /// The runtime's own connections: no REST call or connection notice can take them.
    pool: PgPool,
    /// How to open a connection of its own (the probe that confirms a pause).
    database: PgConnectOptions,
    handler: Arc<H>,
    config: WorkerConfig,
    /// Where partitions hand their ready frames for a shared transaction.
    committer: mpsc::Sender<committer::Share>,
    /// The kind's live instances, as last read (a take-over waits only for a live predecessor).
    members: watch::Receiver<Vec<String>>,
}

/// Runs worker kind `kind` until `stopping` turns true: keeps this instance's heartbeat, pulls the
/// partitions it owns, and on stop lets each finish the batch in hand before returning. `pool`
/// only says where the database is: the runtime opens `WORKER_RUNTIME_POOL_SIZE` connections of
/// its own, so the process's REST calls and notices can never starve frame processing.
pub async fn run<H: BatchHandler>(
    nats: async_nats::Client,
    pool: PgPool,
    kind: &'static str,
    config: WorkerConfig,
    handler: Arc<H>,
    mut stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let jetstream = jetstream::new(nats.clone());
    let stream = jetstream
        .get_stream(shared::subjects::INBOUND_STREAM)
        .await
        .map_err(|error| anyhow::anyhow!("stream INBOUND: {error}"))?;
    let database = (*pool.connect_options()).clone();
    let pool = PgPoolOptions::new()
        .max_connections(config.worker_runtime_pool_size.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .connect_lazy_with(database.clone());
    batch::create_cursors(&pool, kind).await?;
    let (shares, waiting) = mpsc::channel(shared::subjects::PARTITIONS as usize);
    let committer = tokio::spawn(committer::run(
        pool.clone(),
        handler.clone(),
        kind,
        config.worker_batch_max.max(1),
        config.worker_commit_concurrency,
        waiting,
    ));
    let mut ownership = ownership::Ownership::join(&nats, kind).await?;
    let (members_now, members) = watch::channel(ownership.members().to_vec());
    let context = Arc::new(Context {
        kind,
        nats: nats.clone(),
        jetstream,
        stream,
        pool,
        database,
        handler,
        config,
        committer: shares,
        members,
    });
    let mut changes = match ownership.changes().await {
        Ok(changes) => Some(changes),
        Err(error) => {
            tracing::warn!(%error, kind, "cannot watch the members; partitions move at heartbeats only");
            None
        }
    };
    let mut partitions = Partitions {
        context,
        running: HashMap::new(),
        released: Vec::new(),
    };
    let mut heartbeat = tokio::time::interval(ownership::HEARTBEAT);
    let mut beats: u32 = 0;
    tracing::info!(kind, instance = ownership.me(), "worker runtime running");
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                // The members are re-read every few beats (the watch brings changes at once).
                beats = beats.wrapping_add(1);
                let beat = if beats.is_multiple_of(ownership::READ_MEMBERS_EVERY) {
                    ownership.refresh().await
                } else {
                    ownership.beat().await
                };
                if let Err(error) = beat {
                    tracing::warn!(%error, kind, "heartbeat failed; keeping the partitions held");
                    // A restarted nats-server has lost what lives in its memory (the heartbeat
                    // bucket, the consumers' state): define it again, as at start.
                    if error.to_string().contains("no stream")
                        && let Err(error) = shared::nats::provision(&nats).await
                    {
                        tracing::warn!(%error, "cannot provision NATS again");
                    }
                }
                members_now.send_if_modified(|known| ownership.update(known));
                partitions.rebalance(&ownership);
            }
            change = next_change(&mut changes) => match change {
                Some(Ok(change)) if ownership.is_news(&change) => {
                    if let Err(error) = ownership.refresh().await {
                        tracing::warn!(%error, kind, "cannot read the members after a change");
                    }
                    members_now.send_if_modified(|known| ownership.update(known));
                    partitions.rebalance(&ownership);
                }
                Some(_) => {}
                None => {
                    tracing::warn!(kind, "the members watch ended; watching again");
                    changes = ownership.changes().await.ok();
                }
            },
            _ = stopping.changed() => break,
        }
    }
    tracing::info!(kind, "stopping: finishing the batches in hand");
    // The batches in hand are finished, acked and the pins let go before this instance leaves:
    // the others, seeing it gone, then find nothing of it outstanding and pull at once, instead
    // of starting the consumers over under a batch still being acked (which would only send its
    // events twice). The partitions wait for the few milliseconds that takes.
    partitions.stop_all().await;
    ownership.leave().await;
    committer.abort();
    Ok(())
}

/// The next change of the members, or never when there is no watch.
async fn next_change(
    changes: &mut Option<jetstream::kv::Watch>,
) -> Option<Result<jetstream::kv::Entry, jetstream::kv::WatcherError>> {
    use futures::StreamExt;
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}

/// The partition tasks of this instance: those it owns, and those it let go that still finish
/// their batch in hand.
struct Partitions<H> {
    context: Arc<Context<H>>,
    running: HashMap<u32, (watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    released: Vec<tokio::task::JoinHandle<()>>,
}

impl<H: BatchHandler> Partitions<H> {
    /// Starts pulling the partitions newly owned, stops those no longer owned, and starts again
    /// any whose task ended on its own (a panic): a partition is never left unserved.
    fn rebalance(&mut self, ownership: &ownership::Ownership) {
        let kind = self.context.kind;
        let owned = ownership.owned();
        for partition in &owned {
            let ended = self
                .running
                .get(partition)
                .is_some_and(|(_, task)| task.is_finished());
            if ended {
                tracing::error!(
                    kind,
                    partition,
                    "the partition's task ended on its own; starting it again"
                );
                metrics::counter!("worker_partition_task_restarts_total", "kind" => kind)
                    .increment(1);
                self.running.remove(partition);
            }
            self.running.entry(*partition).or_insert_with(|| {
                let (stop, stopped) = watch::channel(false);
                // Restarted after a panic, this instance was the previous owner itself.
                let previous = if ended {
                    None
                } else {
                    ownership.previous_owner(*partition)
                };
                let task = tokio::spawn(partition::run(
                    self.context.clone(),
                    *partition,
                    previous,
                    stopped,
                ));
                (stop, task)
            });
        }
        let lost: Vec<u32> = self
            .running
            .keys()
            .filter(|partition| !owned.contains(partition))
            .copied()
            .collect();
        for partition in lost {
            if let Some((stop, task)) = self.running.remove(&partition) {
                tracing::info!(kind, partition, "partition moves to another instance");
                let _ = stop.send(true);
                self.released.push(task);
            }
        }
        self.released.retain(|task| !task.is_finished());
    }

    /// Stops every partition and waits for each to finish its batch in hand.
    async fn stop_all(self) {
        let mut tasks = self.released;
        for (stop, task) in self.running.into_values() {
            let _ = stop.send(true);
            tasks.push(task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// The frame's `type`, read without the rest (for the error frame of a frame that fails to parse).
fn type_of(payload: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct TypeOnly<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<TypeOnly>(payload)
        .ok()
        .and_then(|frame| frame.kind.map(Cow::into_owned))
}

/// How long to wait before attempt `attempt` (1-based) of a failing frame.
fn backoff(config: &WorkerConfig, attempt: u32) -> Duration {
    let base = Duration::from_millis(config.worker_retry_backoff_ms.max(1));
    base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(5))
}
