//! How every JetStream-fed worker handles a frame, written once: pull from the kind's durable
//! consumer (shared by all its instances), run the handler inside one Postgres transaction, commit,
//! publish the resulting events, then ack.
//!
//! Redelivery is harmless: each frame's id (`Nats-Msg-Id`, set by the gateway) is claimed in
//! `handled_frames` inside the same transaction, together with the events it produced. A frame
//! whose id is already there is not handled again; its stored events are re-published instead
//! (the crash may have happened between commit and publish).
//!
//! Frames are spread over `WORKER_CONCURRENCY` lanes by the id in their subject, so the frames of
//! one session are handled one after another, in stream order, while different sessions proceed
//! in parallel.

use crate::outbox::{Delivery, Outbox};
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use serde_json::Value;
use shared::auth::Role;
use shared::frames::{ClientFrame, Event};
use shared::headers;
use shared::subjects::{Address, INBOUND_STREAM};
use sqlx::{PgConnection, PgPool};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Who sent a frame, from the headers only the gateway sets.
#[derive(Clone, Debug)]
pub struct Sender {
    pub user_id: String,
    pub role: Role,
    pub conn_id: String,
}

/// A frame as a handler sees it.
#[derive(Debug)]
pub struct Inbound {
    pub address: Address,
    pub sender: Sender,
    pub frame_id: String,
    pub trace_id: String,
    /// The `chat-frame` header: this frame's number among its socket's chat frames.
    pub chat_frame: Option<i64>,
    /// When JetStream stored the frame.
    pub stored_at: chrono::DateTime<chrono::Utc>,
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
    /// An earlier frame this one must follow has not been applied yet: try again shortly.
    #[error("waiting for an earlier frame")]
    NotYet,
    /// Infrastructure trouble (database down...): redelivered later.
    #[error(transparent)]
    Retry(#[from] anyhow::Error),
}

impl From<sqlx::Error> for FrameError {
    fn from(error: sqlx::Error) -> FrameError {
        FrameError::Retry(error.into())
    }
}

impl FrameError {
    pub fn refused(error: impl Into<String>, session_id: Option<Uuid>) -> FrameError {
        FrameError::Refused {
            error: error.into(),
            session_id,
        }
    }
}

/// One worker kind's frame handling: a `match` from frame type to handler module.
pub trait FrameHandler: Send + Sync + 'static {
    /// Whether handling `frame` changes state and so must be recorded against redelivery.
    /// Read-only frames (a `resume`) are simply handled again when redelivered.
    fn changes_state(&self, _frame: &ClientFrame) -> bool {
        true
    }

    /// Whether the frame may be handled now; `Err(NotYet)` sends it back for a moment (used by
    /// the chat worker to keep a sender's frames in order across instances).
    fn admit(
        &self,
        _pool: &PgPool,
        _inbound: &Inbound,
    ) -> impl Future<Output = Result<(), FrameError>> + Send {
        async { Ok(()) }
    }

    /// Called after the frame's transaction committed.
    fn committed(&self, _inbound: &Inbound) {}

    fn handle(
        &self,
        tx: &mut PgConnection,
        inbound: &Inbound,
        frame: ClientFrame,
        outbox: &mut Outbox,
    ) -> impl Future<Output = Result<(), FrameError>> + Send;
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

impl Inbound {
    fn from_message(message: &jetstream::Message) -> Result<Inbound, &'static str> {
        let address = Address::parse(message.subject.as_str()).ok_or("unknown subject")?;
        let headers = message.headers.as_ref().ok_or("no headers")?;
        let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        let sender =
            Sender::from_headers(Some(headers)).ok_or("no user-id, role or conn-id header")?;
        let frame_id = header(headers::MSG_ID).ok_or("no Nats-Msg-Id header")?;
        let trace_id = header(headers::TRACE_ID).unwrap_or_else(|| frame_id.clone());
        let chat_frame = header(headers::CHAT_FRAME).and_then(|value| value.parse().ok());
        let stored_at = message
            .info()
            .ok()
            .and_then(|info| {
                chrono::DateTime::from_timestamp(
                    info.published.unix_timestamp(),
                    info.published.nanosecond(),
                )
            })
            .unwrap_or_else(chrono::Utc::now);
        Ok(Inbound {
            address,
            sender,
            frame_id,
            trace_id,
            chat_frame,
            stored_at,
        })
    }
}

/// Frames with the same subject id (a session, a message, a work order) share a lane.
fn lane_of(subject: &str, lanes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match Address::parse(subject) {
        Some(Address::Session { session_id, .. }) => session_id.hash(&mut hasher),
        Some(Address::MessageReceipt { message_id }) => message_id.hash(&mut hasher),
        Some(Address::WorkResponse { work_id }) => work_id.hash(&mut hasher),
        None => subject.hash(&mut hasher),
    }
    (hasher.finish() as usize) % lanes
}

/// Runs the consumer `consumer_name` with `handler` until the process stops.
pub async fn run_consumer<H: FrameHandler>(
    nats: async_nats::Client,
    pool: PgPool,
    consumer_name: &'static str,
    concurrency: usize,
    handler: Arc<H>,
) -> anyhow::Result<()> {
    let context = jetstream::new(nats.clone());
    let stream = context.get_stream(INBOUND_STREAM).await?;
    let consumer: PullConsumer = stream
        .get_consumer(consumer_name)
        .await
        .map_err(|error| anyhow::anyhow!("consumer {consumer_name}: {error}"))?;
    let lanes: Vec<mpsc::Sender<jetstream::Message>> = (0..concurrency.max(1))
        .map(|_| {
            let (sender, mut receiver) = mpsc::channel::<jetstream::Message>(64);
            let (nats, pool, handler) = (nats.clone(), pool.clone(), handler.clone());
            tokio::spawn(async move {
                while let Some(message) = receiver.recv().await {
                    process(&*handler, &pool, &nats, message).await;
                }
            });
            sender
        })
        .collect();
    tracing::info!(consumer = consumer_name, lanes = lanes.len(), "consuming");
    loop {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(64)
            .messages()
            .await
        {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot pull; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(next) = messages.next().await {
            let message = match next {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "pull error");
                    continue;
                }
            };
            let lane = lane_of(message.subject.as_str(), lanes.len());
            if lanes[lane].send(message).await.is_err() {
                anyhow::bail!("a frame lane stopped");
            }
        }
    }
}

async fn process<H: FrameHandler>(
    handler: &H,
    pool: &PgPool,
    nats: &async_nats::Client,
    message: jetstream::Message,
) {
    let inbound = match Inbound::from_message(&message) {
        Ok(inbound) => inbound,
        Err(reason) => {
            tracing::warn!(subject = %message.subject, reason, "dropping a frame not from the gateway");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let started = std::time::Instant::now();
    let outcome = handle_once(handler, pool, &inbound, &message.payload).await;
    match outcome {
        Ok(deliveries) => {
            // Ack before publishing, on the same connection: if the events reached the server, so
            // did the ack, and a redelivery (which re-publishes the stored events) only happens
            // when they did not. Clients get each event once.
            if let Err(error) = message.ack().await {
                tracing::warn!(%error, "ack failed; the frame will be redelivered and deduplicated");
            }
            crate::outbox::publish(nats, &deliveries, &inbound.trace_id).await;
        }
        Err(FrameError::Refused { error, session_id }) => {
            let request_type = serde_json::from_slice::<Value>(&message.payload)
                .ok()
                .and_then(|frame| frame.get("type").and_then(Value::as_str).map(str::to_owned));
            let event = Event::error(error, request_type.as_deref(), session_id);
            let delivery =
                Delivery::to_socket(&inbound.sender.user_id, &inbound.sender.conn_id, &event);
            crate::outbox::publish(nats, &[delivery], &inbound.trace_id).await;
            let _ = message.ack().await;
        }
        Err(FrameError::NotYet) => {
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_millis(10))))
                .await;
        }
        Err(FrameError::Retry(error)) => {
            tracing::error!(%error, subject = %message.subject, trace_id = %inbound.trace_id, "frame failed; will be redelivered");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
    metrics::histogram!("worker_frame_seconds").record(started.elapsed().as_secs_f64());
}

/// Handles a frame inside one transaction, or returns the events of its earlier handling.
async fn handle_once<H: FrameHandler>(
    handler: &H,
    pool: &PgPool,
    inbound: &Inbound,
    payload: &[u8],
) -> Result<Vec<Delivery>, FrameError> {
    let frame: ClientFrame = serde_json::from_slice(payload)
        .map_err(|error| FrameError::refused(format!("invalid frame: {error}"), None))?;
    handler.admit(pool, inbound).await?;
    let mut tx = pool.begin().await?;
    if !handler.changes_state(&frame) {
        let mut outbox = Outbox::default();
        handler.handle(&mut tx, inbound, frame, &mut outbox).await?;
        tx.commit().await?;
        handler.committed(inbound);
        return Ok(outbox.into_deliveries());
    }
    let claimed = sqlx::query(
        "INSERT INTO handled_frames (frame_id, events) VALUES ($1, '[]') ON CONFLICT DO NOTHING",
    )
    .bind(&inbound.frame_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        drop(tx);
        let stored: Option<sqlx::types::Json<Vec<Delivery>>> =
            sqlx::query_scalar("SELECT events FROM handled_frames WHERE frame_id = $1")
                .bind(&inbound.frame_id)
                .fetch_optional(pool)
                .await?;
        tracing::info!(frame_id = %inbound.frame_id, "redelivered frame already handled; re-publishing its events");
        return Ok(stored.map(|events| events.0).unwrap_or_default());
    }
    let mut outbox = Outbox::default();
    handler.handle(&mut tx, inbound, frame, &mut outbox).await?;
    let deliveries = outbox.into_deliveries();
    sqlx::query("UPDATE handled_frames SET events = $2 WHERE frame_id = $1")
        .bind(&inbound.frame_id)
        .bind(sqlx::types::Json(&deliveries))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    handler.committed(inbound);
    Ok(deliveries)
}
