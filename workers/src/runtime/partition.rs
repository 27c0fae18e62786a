//! One partition of one worker kind, while this instance owns it: take it over, pull it, and apply
//! what arrives in batches, strictly in stream order.
//!
//! Why the order holds: the server delivers a consumer's frames in stream order, frames whose ack
//! lapsed before new ones; the partition's consumer delivers to one pinned puller; and this puller
//! checks that it sees every delivery (consecutive delivery sequences). When it cannot be sure (a
//! missed delivery, a lost connection, a take-over, Postgres gone) it stops, waits for the
//! deliveries still outstanding to be acked or for their puller to let go (else starts the
//! consumer over: the stream keeps what is not acked), and pulls again, so the first frame it
//! gets is the oldest one not applied. Frames at or below the partition's applied sequence are
//! skipped (`batch`), so nothing is applied twice.

use super::batch::{self, Failure, Part, Pause};
use super::committer::Share;
use super::{
    BatchHandler, Context, Frame, FrameError, Inbound, Sender, backoff, dead_letter, type_of,
};
use crate::outbox::Outbox;
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use shared::frames::{ClientFrame, Event};
use shared::headers;
use shared::nats::{ACK_WAIT, OWNER_GROUP, consumer_name};
use shared::subjects::Address;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// How long a pull request waits on the server; well below the consumer's priority timeout, so
/// the pin is renewed while the partition is quiet.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
const PULL_HEARTBEAT: Duration = Duration::from_secs(2);

/// A partition that received nothing for this long checks that it is not waiting behind a pin
/// that nobody uses.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// Said to the sender of a frame that was dead-lettered or that Postgres refused.
const NOT_PROCESSED: &str = "could not be processed";

/// Why pulling stopped.
enum Outcome {
    /// Told to stop (the partition moved, or the process is stopping).
    Stopped,
    /// Deliveries may have been missed: start over.
    Disrupted(String),
    /// The database cannot take writes: wait until a probe says it can, then start over.
    DatabaseDown(Pause),
}

/// Pulls the partition until told to stop. `previous_owner` is the instance that pulled it before
/// this one took it (if known): while that one is alive its batch in hand is waited for.
pub async fn run<H: BatchHandler>(
    context: Arc<Context<H>>,
    partition: u32,
    previous_owner: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let name = consumer_name(context.kind, partition);
    let kind = context.kind;
    // The highest frame this task applied and acked, kept across pulls: a copy of one of those
    // that comes back was handled here, events included. It counts in one stream (`epoch`).
    let mut acked_through: u64 = 0;
    let mut epoch: i64 = 0;
    let mut previous_owner = previous_owner;
    loop {
        if *stop.borrow()
            || !take_over(&context, partition, &name, previous_owner.take(), &mut stop).await
        {
            break;
        }
        tracing::debug!(kind, partition, "pulling");
        match pull(
            &context,
            partition,
            &name,
            &mut stop,
            &mut acked_through,
            &mut epoch,
        )
        .await
        {
            Outcome::Stopped => break,
            Outcome::Disrupted(reason) => {
                tracing::warn!(kind, partition, %reason, "partition pull disrupted; starting over");
                metrics::counter!("worker_partition_restarts_total", "kind" => kind).increment(1);
                // Never a tight loop against a server that keeps refusing.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Outcome::DatabaseDown(pause) => {
                if !wait_for_database(&context, partition, pause, &mut stop).await {
                    break;
                }
            }
        }
    }
    // Let the next owner have the pin at once (it still waits for our deliveries to lapse).
    let _ = context.stream.unpin_consumer(&name, OWNER_GROUP).await;
    tracing::debug!(kind, partition, "released");
}

/// Waits until no delivery of the consumer is outstanding, then takes the pin. Deliveries still
/// outstanding are started over at once (the consumer is deleted and recreated, which delivers
/// again every frame not yet acked, in stream order; the applied-sequence fence skips those
/// already committed) unless a live previous owner may still be finishing its batch in hand: that
/// one is waited for until it lets go of the pin (it unpins after acking), leaves the members, or
/// `ACK_WAIT` passes. A crashed owner is gone from the members within a heartbeat's expiry, so its
/// partitions are served again without waiting for its deliveries to lapse. False when told to
/// stop meanwhile.
async fn take_over<H>(
    context: &Context<H>,
    partition: u32,
    name: &str,
    previous_owner: Option<String>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = Instant::now() + ACK_WAIT;
    loop {
        match context.stream.consumer_info(name).await {
            Ok(info) if info.num_ack_pending == 0 => break,
            // A consumer that is gone (a server restart) has no deliveries outstanding.
            Err(error) if error.to_string().contains("not found") => break,
            Ok(info) => {
                let released = info
                    .priority_groups
                    .iter()
                    .all(|group| group.pinned_client_id.is_none());
                let previous_alive = previous_owner
                    .as_deref()
                    .is_some_and(|owner| context.members.borrow().iter().any(|m| m == owner));
                if released || !previous_alive || Instant::now() >= deadline {
                    tracing::info!(
                        consumer = name,
                        outstanding = info.num_ack_pending,
                        released,
                        previous_alive,
                        "deliveries of the previous owner still outstanding; starting the consumer over"
                    );
                    start_consumer_over(context, partition, name).await;
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, consumer = name, "cannot read consumer state");
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = stop.changed() => return false,
        }
    }
    let _ = context.stream.unpin_consumer(name, OWNER_GROUP).await;
    !*stop.borrow()
}

/// Deletes and recreates the partition's consumer: the stream keeps every frame until it is
/// acked (work-queue retention), so the new consumer delivers all that is left, oldest first.
async fn start_consumer_over<H>(context: &Context<H>, partition: u32, name: &str) {
    if let Err(error) = context.stream.delete_consumer(name).await {
        tracing::warn!(%error, consumer = name, "cannot delete the partition consumer");
    }
    recreate_consumer(context, partition).await;
}

async fn recreate_consumer<H>(context: &Context<H>, partition: u32) {
    let Some(definition) = shared::nats::worker_kinds()
        .into_iter()
        .find(|definition| definition.kind == context.kind)
    else {
        return;
    };
    let config = shared::nats::partition_consumer(&definition, partition);
    match context.stream.create_consumer(config).await {
        Ok(_) => tracing::info!(
            kind = context.kind,
            partition,
            "partition consumer recreated"
        ),
        Err(error) => {
            tracing::warn!(%error, kind = context.kind, partition, "cannot recreate the partition consumer")
        }
    }
}

/// A quiet partition with frames waiting means the pin is held by a puller that is gone (or
/// another instance that no longer owns the partition): release it, so ours is served. A consumer
/// that is gone (its state lives in server memory, lost in a restart) is recreated; false then,
/// and the pull starts over.
async fn unstick<H>(context: &Context<H>, partition: u32, name: &str) -> bool {
    match context.stream.consumer_info(name).await {
        Ok(info) if info.num_pending > 0 => {
            tracing::warn!(
                consumer = name,
                waiting = info.num_pending,
                "frames wait while the partition is quiet; taking the pin"
            );
            let _ = context.stream.unpin_consumer(name, OWNER_GROUP).await;
            true
        }
        Ok(_) => true,
        Err(error) if error.to_string().contains("not found") => {
            recreate_consumer(context, partition).await;
            false
        }
        Err(_) => true,
    }
}

/// Waits until the database takes writes again, asked by a probe on a connection of its own
/// every second. A failure the probe does not confirm (a pool that was briefly exhausted, a
/// statement that timed out once) costs only a short pause; either way nothing is attempted
/// meanwhile and nothing counts against the frames. False when told to stop.
async fn wait_for_database<H>(
    context: &Context<H>,
    partition: u32,
    pause: Pause,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let kind = context.kind;
    metrics::counter!("worker_database_failures_total", "kind" => kind, "cause" => pause.cause)
        .increment(1);
    let mut confirmed = match batch::probe(&context.database).await {
        Ok(()) => {
            tracing::warn!(kind, partition, cause = pause.cause, detail = %pause.detail, "a batch failed for the database, which answers a probe; retrying shortly");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => return true,
                _ = stop.changed() => return false,
            }
        }
        Err(confirmed) => confirmed,
    };
    tracing::error!(kind, partition, cause = confirmed.cause, detail = %confirmed.detail, "the database takes no writes; pausing this partition until it does");
    metrics::counter!("worker_pauses_total", "kind" => kind, "cause" => confirmed.cause)
        .increment(1);
    let paused = metrics::gauge!("worker_partitions_paused", "kind" => kind);
    paused.increment(1.0);
    let resumed = loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => break false,
        }
        match batch::probe(&context.database).await {
            Ok(()) => break true,
            Err(still) => confirmed = still,
        }
    };
    paused.decrement(1.0);
    if resumed {
        tracing::info!(
            kind,
            partition,
            last_cause = confirmed.cause,
            "the database takes writes again; resuming"
        );
    }
    resumed
}

/// Reads when `INBOUND` was created (its identity: a stream made again starts its sequences
/// over), making it again when it is missing (deleted by an operator, or lost with a node's
/// store), as every process does at start.
async fn stream_epoch<H>(context: &Context<H>) -> Result<i64, String> {
    let stream_name = shared::subjects::INBOUND_STREAM;
    match context.jetstream.get_stream(stream_name).await {
        Ok(stream) => Ok(epoch_of(stream.cached_info())),
        Err(error) => {
            if error.to_string().contains("not found") {
                tracing::warn!(kind = context.kind, "INBOUND is missing: making it again");
                if let Err(error) = shared::nats::provision(&context.nats).await {
                    tracing::warn!(%error, "cannot provision NATS");
                }
            }
            Err(format!("stream {stream_name}: {error}"))
        }
    }
}

fn epoch_of(info: &jetstream::stream::Info) -> i64 {
    i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

async fn pull<H: BatchHandler>(
    context: &Context<H>,
    partition: u32,
    name: &str,
    stop: &mut watch::Receiver<bool>,
    acked_through: &mut u64,
    epoch: &mut i64,
) -> Outcome {
    let current = match stream_epoch(context).await {
        Ok(current) => current,
        Err(reason) => return Outcome::Disrupted(reason),
    };
    if current != *epoch {
        // Sequences of another stream: what this task acked there says nothing here.
        *acked_through = 0;
        *epoch = current;
        match batch::adopt_stream(&context.pool, context.kind, partition, current).await {
            Ok(true) => {
                tracing::warn!(
                    kind = context.kind,
                    partition,
                    "INBOUND was made again: the partition's cursor starts over with the new stream"
                );
                metrics::counter!("worker_stream_resets_total", "kind" => context.kind)
                    .increment(1);
            }
            Ok(false) => {}
            Err(error) => {
                return match Failure::of(&FrameError::Database(error)) {
                    Failure::Unavailable(pause) => Outcome::DatabaseDown(pause),
                    other => Outcome::Disrupted(format!("cannot adopt the stream: {other:?}")),
                };
            }
        }
    }
    let epoch = *epoch;
    let consumer: jetstream::consumer::PullConsumer = match context.stream.get_consumer(name).await
    {
        Ok(consumer) => consumer,
        Err(error) => {
            // Consumers keep their state in memory: after a server restart they are recreated.
            recreate_consumer(context, partition).await;
            return Outcome::Disrupted(format!("consumer {name}: {error}"));
        }
    };
    let batch_max = context.config.worker_batch_max.max(1);
    let mut messages = match consumer
        .stream()
        .group(OWNER_GROUP)
        .max_messages_per_batch(batch_max)
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
    {
        Ok(messages) => messages,
        Err(error) => return Outcome::Disrupted(format!("cannot pull: {error}")),
    };
    // The stream made again between the first read and the pull would hand this puller frames
    // of a stream its cursor does not count in. (Once pulling, a deleted stream ends the pull.)
    match stream_epoch(context).await {
        Ok(again) if again == epoch => {}
        Ok(_) => return Outcome::Disrupted(String::from("INBOUND was made again")),
        Err(reason) => return Outcome::Disrupted(reason),
    }
    let batch_sizes = metrics::histogram!("worker_batch_frames", "kind" => context.kind);
    let batch_seconds = metrics::histogram!("worker_batch_seconds", "kind" => context.kind);
    let mut last_delivery: Option<u64> = None;
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.changed() => None,
            next = tokio::time::timeout(IDLE_CHECK, messages.next()) => match next {
                Ok(next) => Some(next),
                Err(_) => {
                    if !unstick(context, partition, name).await {
                        return Outcome::Disrupted(String::from("the partition consumer was gone"));
                    }
                    continue;
                }
            },
        };
        let mut held = Vec::new();
        let stopping = next.is_none();
        match next {
            // Told to stop: apply what already arrived, so the next owner need not wait for it to lapse.
            None => {}
            Some(Some(Ok(message))) => {
                super::fault::maybe_panic(&message.payload);
                held.push(message)
            }
            Some(Some(Err(error))) => {
                // A missed idle heartbeat does not end the pull; a lost delivery shows as a gap.
                tracing::debug!(%error, "pull status");
                if error.to_string().contains("heartbeat") {
                    if !unstick(context, partition, name).await {
                        return Outcome::Disrupted(String::from("the partition consumer was gone"));
                    }
                    continue;
                }
                return Outcome::Disrupted(format!("pull failed: {error}"));
            }
            Some(None) => return Outcome::Disrupted(String::from("the pull ended")),
        }
        while held.len() < batch_max {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => held.push(message),
                _ => break,
            }
        }
        let mut in_order = Vec::with_capacity(held.len());
        let mut gap = false;
        for message in held {
            let Ok(delivery) = message.info().map(|info| info.consumer_sequence) else {
                continue;
            };
            if last_delivery.is_some_and(|last| delivery != last + 1) {
                gap = true;
                break;
            }
            last_delivery = Some(delivery);
            in_order.push(message);
        }
        // A frame this puller applied and acked itself may come back (its ack wait lapsed while it
        // sat in the buffer): ack it again and leave it out, or its batch's events would be
        // published twice.
        in_order.retain(|message| {
            let seq = message.info().map(|info| info.stream_sequence).unwrap_or(0);
            if seq != 0 && seq <= *acked_through {
                let message = message.clone();
                tokio::spawn(async move {
                    let _ = message.ack().await;
                });
                return false;
            }
            true
        });
        if !in_order.is_empty() {
            let started = Instant::now();
            batch_sizes.record(in_order.len() as f64);
            let highest = in_order
                .iter()
                .filter_map(|message| message.info().ok().map(|info| info.stream_sequence))
                .max()
                .unwrap_or(0);
            // What this puller committed last is where the partition's cursor stands, unless
            // another owner moved it meanwhile (then the batch's fence check fails, and it is
            // applied again with the cursor read).
            let expected_applied = (*acked_through > 0).then_some(*acked_through);
            if let Err(outcome) =
                handle(context, partition, epoch, in_order, expected_applied, stop).await
            {
                return outcome;
            }
            *acked_through = (*acked_through).max(highest);
            batch_seconds.record(started.elapsed().as_secs_f64());
        }
        if gap {
            return Outcome::Disrupted(String::from("a delivery was missed"));
        }
        if stopping {
            return Outcome::Stopped;
        }
    }
}

/// What a stored frame turned out to be.
enum Parsed {
    Frame(Frame),
    /// Refused before any handler saw it (it does not parse).
    Refused(Inbound),
    /// Not from the gateway (no identity headers): dropped.
    Foreign(&'static str),
}

fn parse(message: &jetstream::Message, partition: u32) -> Parsed {
    let Some(address) = Address::parse(message.subject.as_str()) else {
        return Parsed::Foreign("unknown subject");
    };
    let Some(sender) = Sender::from_headers(message.headers.as_ref()) else {
        return Parsed::Foreign("no user-id, role or conn-id header");
    };
    let stream_seq = message.info().map(|info| info.stream_sequence).unwrap_or(0);
    let trace_id: Arc<str> = message
        .headers
        .as_ref()
        .and_then(|headers| {
            headers
                .get(headers::TRACE_ID)
                .or_else(|| headers.get(headers::MSG_ID))
        })
        .map(|value| Arc::from(value.as_str()))
        .unwrap_or_else(|| Arc::from(""));
    let mut inbound = Inbound {
        address,
        sender,
        trace_id,
        request_type: None,
        stream_seq,
        partition: 0,
    };
    inbound.partition = partition;
    // Only an object is a frame: serde would read a JSON array into one field by field.
    let is_object = message.payload.trim_ascii_start().starts_with(b"{");
    match serde_json::from_slice::<ClientFrame>(&message.payload) {
        Ok(frame) if is_object => {
            inbound.request_type = Some(frame.kind().name().to_owned());
            Parsed::Frame(Frame { inbound, frame })
        }
        Ok(_) | Err(_) => {
            inbound.request_type = type_of(&message.payload);
            Parsed::Refused(inbound)
        }
    }
}

fn session_of(inbound: &Inbound) -> Option<uuid::Uuid> {
    match inbound.address {
        Address::Session { session_id, .. } => Some(session_id),
        _ => None,
    }
}

/// How a batch is committed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// In a transaction shared with other partitions' ready frames, with the partition's applied
    /// sequence as this puller believes it to be.
    Shared(Option<u64>),
    /// In a transaction of its own.
    Alone,
}

/// Applies `messages` as one batch (shared with other partitions; alone if the shared transaction
/// fails); when that fails for a reason other than an outage, applies them one by one so that
/// only the failing frame is retried and, at last, dead-lettered.
async fn handle<H: BatchHandler>(
    context: &Context<H>,
    partition: u32,
    epoch: i64,
    messages: Vec<jetstream::Message>,
    expected_applied: Option<u64>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Outcome> {
    let error = match attempt(
        context,
        partition,
        epoch,
        &messages,
        Mode::Shared(expected_applied),
    )
    .await
    {
        Ok(()) => return Ok(()),
        Err(None) => match attempt(context, partition, epoch, &messages, Mode::Alone).await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        },
        Err(Some(error)) => Some(error),
    };
    let Some(error) = error else {
        return Err(Outcome::Disrupted(String::from(
            "could not finish the batch",
        )));
    };
    let failure = match Failure::of(&error) {
        Failure::Unavailable(pause) => return Err(Outcome::DatabaseDown(pause)),
        Failure::StreamChanged => return Err(Outcome::Disrupted(error.to_string())),
        failure => failure,
    };
    if messages.len() == 1 {
        return retry_alone(context, partition, epoch, &messages[0], failure, stop).await;
    }
    tracing::warn!(kind = context.kind, partition, error = %error, frames = messages.len(), "batch failed; applying its frames one by one");
    for message in &messages {
        if let Err(error) = attempt(
            context,
            partition,
            epoch,
            std::slice::from_ref(message),
            Mode::Alone,
        )
        .await
        {
            let Some(error) = error else {
                return Err(Outcome::Disrupted(String::from(
                    "could not finish the batch",
                )));
            };
            match Failure::of(&error) {
                Failure::Unavailable(pause) => return Err(Outcome::DatabaseDown(pause)),
                Failure::StreamChanged => return Err(Outcome::Disrupted(error.to_string())),
                failure => retry_alone(context, partition, epoch, message, failure, stop).await?,
            }
        }
    }
    Ok(())
}

/// Parses, applies, commits, publishes and acks. `Err(None)`: the shared transaction failed (or
/// the committer is gone, or NATS did not confirm the events), try again.
async fn attempt<H: BatchHandler>(
    context: &Context<H>,
    partition: u32,
    epoch: i64,
    messages: &[jetstream::Message],
    mode: Mode,
) -> Result<(), Option<FrameError>> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut frames = Vec::with_capacity(messages.len());
    let mut early = Outbox::default();
    let mut last_seq = 0;
    let first_seq = messages
        .iter()
        .filter_map(|message| message.info().ok().map(|info| info.stream_sequence))
        .min()
        .unwrap_or(0);
    for message in messages {
        match parse(message, partition) {
            Parsed::Frame(frame) => {
                last_seq = last_seq.max(frame.inbound.stream_seq);
                frames.push(frame);
            }
            Parsed::Refused(inbound) => {
                last_seq = last_seq.max(inbound.stream_seq);
                let session_id = session_of(&inbound);
                early.refuse(
                    &inbound,
                    String::from(
                        "invalid frame: a field is missing, of the wrong type or out of range",
                    ),
                    session_id,
                    None,
                );
            }
            Parsed::Foreign(reason) => {
                tracing::warn!(subject = %message.subject, reason, "dropping a frame not from the gateway");
                last_seq =
                    last_seq.max(message.info().map(|info| info.stream_sequence).unwrap_or(0));
            }
        }
    }
    let part = Part {
        partition,
        frames,
        first_seq,
        last_seq,
        early: early.into_deliveries(),
        expected_applied: match mode {
            Mode::Shared(expected) => expected,
            Mode::Alone => None,
        },
        stream_epoch: epoch,
    };
    let events = match mode {
        Mode::Shared(_) => {
            let (answer, answered) = oneshot::channel();
            if context
                .committer
                .send(Share { part, answer })
                .await
                .is_err()
            {
                return Err(None);
            }
            match answered.await {
                Ok(Ok(events)) => events,
                Ok(Err(())) | Err(_) => return Err(None),
            }
        }
        // A handler that panics is a failing frame like any other (retried, then dead-lettered),
        // not the end of the partition's task.
        Mode::Alone => AssertUnwindSafe(batch::apply(
            &context.pool,
            &*context.handler,
            context.kind,
            vec![part],
        ))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(FrameError::Retry(anyhow::anyhow!("the handler panicked"))))
        .map_err(Some)?
        .pop()
        .flatten(),
    };
    // Events first, confirmed by a flush (the server has routed them), then the acks: a worker that
    // dies in between leaves its batch unacked, and the next owner publishes the stored events
    // again (at least once; clients drop a repeated message_id). Acks first would lose the events
    // of a worker that dies after its acks went out.
    if let Some(events) = events
        && !events.is_empty()
    {
        crate::outbox::publish_all(&context.nats, events).await;
        if let Err(error) = context.nats.flush().await {
            // Unacked, the batch comes back and its stored events go out again.
            tracing::warn!(%error, "events not confirmed; leaving the batch unacked");
            return Err(None);
        }
    }
    for message in messages {
        if let Err(error) = message.ack().await {
            tracing::warn!(%error, "ack failed; the frame will be redelivered and skipped");
        }
    }
    Ok(())
}

/// Retries one failing frame with backoff; refuses it at once when Postgres rejects its content;
/// dead-letters it after `WORKER_MAX_DELIVER` attempts.
async fn retry_alone<H: BatchHandler>(
    context: &Context<H>,
    partition: u32,
    epoch: i64,
    message: &jetstream::Message,
    mut failure: Failure,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Outcome> {
    let max_attempts = context.config.worker_max_deliver.max(1);
    let mut attempts = 1;
    loop {
        match failure {
            Failure::Unavailable(pause) => return Err(Outcome::DatabaseDown(pause)),
            Failure::StreamChanged => {
                return Err(Outcome::Disrupted(String::from("INBOUND was made again")));
            }
            Failure::Content(reason) => {
                tracing::warn!(kind = context.kind, partition, %reason, "Postgres refused a frame's content; refusing it");
                return give_up(context, partition, epoch, message, None).await;
            }
            Failure::Failed(reason) if attempts >= max_attempts => {
                tracing::error!(kind = context.kind, partition, %reason, attempts, "frame failed every attempt; dead-lettering it");
                return give_up(context, partition, epoch, message, Some(&reason)).await;
            }
            Failure::Failed(reason) => {
                tracing::warn!(kind = context.kind, partition, %reason, attempts, "frame failed; retrying");
            }
        }
        // Waits in steps well inside the ack wait, telling the server the frame is in hand.
        let mut wait = backoff(&context.config, attempts);
        while !wait.is_zero() {
            let _ = message.ack_with(AckKind::Progress).await;
            let step = wait.min(Duration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                _ = stop.changed() => return Err(Outcome::Stopped),
            }
            wait -= step;
        }
        attempts += 1;
        failure = match attempt(
            context,
            partition,
            epoch,
            std::slice::from_ref(message),
            Mode::Alone,
        )
        .await
        {
            Ok(()) => return Ok(()),
            Err(Some(error)) => Failure::of(&error),
            Err(None) => Failure::Failed(String::from("the committer stopped")),
        };
    }
}

/// Counts the frame as applied without its effects: dead-letters it first when `error` says why,
/// tells the sender, acks.
async fn give_up<H>(
    context: &Context<H>,
    partition: u32,
    epoch: i64,
    message: &jetstream::Message,
    error: Option<&str>,
) -> Result<(), Outcome> {
    let stream_seq = message.info().map(|info| info.stream_sequence).unwrap_or(0);
    if let Some(error) = error
        && let Err(publish_error) = dead_letter::store(
            &context.jetstream,
            context.kind,
            message,
            epoch,
            stream_seq,
            error,
        )
        .await
    {
        return Err(Outcome::Disrupted(format!(
            "cannot dead-letter a frame: {publish_error}"
        )));
    }
    match batch::skip(&context.pool, context.kind, partition, stream_seq, epoch).await {
        Ok(true) => {
            if let Parsed::Frame(Frame { inbound, .. }) | Parsed::Refused(inbound) =
                parse(message, partition)
            {
                let event = Event::error(
                    NOT_PROCESSED,
                    inbound.request_type.as_deref(),
                    session_of(&inbound),
                );
                let mut outbox = Outbox::default();
                outbox.begin_frame(&inbound);
                outbox.to_socket(&inbound.sender.user_id, &inbound.sender.conn_id, &event);
                let _ = message.ack().await;
                crate::outbox::publish_all(&context.nats, outbox.into_deliveries()).await;
                return Ok(());
            }
        }
        Ok(false) => {}
        Err(error) => {
            return match Failure::of(&error) {
                Failure::Unavailable(pause) => Err(Outcome::DatabaseDown(pause)),
                other => Err(Outcome::Disrupted(format!(
                    "cannot skip a frame: {other:?}"
                ))),
            };
        }
    }
    let _ = message.ack().await;
    Ok(())
}
