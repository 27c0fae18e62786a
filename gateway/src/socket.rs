//! One task per WebSocket: reads client frames and publishes what passes `inbound::judge`, writes
//! the events the registry queues for it, answers `ping`, pings idle sockets and closes silent ones.
//!
//! Buffers are kept small (1 KiB read chunks, writes flushed at once, a queue that grows only with
//! what is queued, one timer; see `run`) so an idle socket costs about 6 KiB: the gateway is meant
//! to hold very many of them.

use crate::SharedState;
use crate::auth::authenticate_acting;
use crate::registry::{ConnectionHandle, Outgoing};
use crate::socket_queue;
use async_nats::HeaderMap;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::HeaderMap as HttpHeaders;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use gateway::dialects::Dialect;
use gateway::dialects::conversation_socket::ConversationSocket;
use gateway::inbound::{self, Verdict};
use gateway::limits::{Abuse, Coalescer, Held, TokenBucket};
use shared::auth::{Identity, Role};
use shared::frames::{Event, FrameKind, errors};
use shared::headers;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Frames above this get an error and close 1009 (contract section 4).
const FRAME_LIMIT: usize = 64 * 1024;
/// What tungstenite itself accepts; between the two limits the client still gets a readable error.
const TRANSPORT_LIMIT: usize = 256 * 1024;

pub async fn provider_upgrade(
    state: State<SharedState>,
    headers: HttpHeaders,
    query: Query<BTreeMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade_for(state, headers, query, upgrade, Role::Provider)
}

pub async fn mediator_upgrade(
    state: State<SharedState>,
    headers: HttpHeaders,
    query: Query<BTreeMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade_for(state, headers, query, upgrade, Role::Mediator)
}

pub async fn seeker_upgrade(
    state: State<SharedState>,
    headers: HttpHeaders,
    query: Query<BTreeMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade_for(state, headers, query, upgrade, Role::Seeker)
}

fn upgrade_for(
    State(state): State<SharedState>,
    headers: HttpHeaders,
    Query(query): Query<BTreeMap<String, String>>,
    upgrade: WebSocketUpgrade,
    role: Role,
) -> Response {
    let identity = match authenticate_acting(
        &state.verifier,
        &headers,
        &query,
        Some(role),
        &state.config.cors_origins,
    ) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(slot) = socket_slot(&state, &identity) else {
        return too_many_sockets();
    };
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(TRANSPORT_LIMIT)
        .max_frame_size(TRANSPORT_LIMIT)
        .on_upgrade(move |socket| run(state, identity, socket, None, slot))
}

pub(crate) const TOO_MANY_SOCKETS: &str = "too many open sockets for this user";

/// One of the user's `WS_MAX_SOCKETS_PER_USER` places on this gateway (any protocol), taken before
/// the upgrade answers and held until the socket closes; `None` when all are taken.
pub(crate) fn socket_slot(
    state: &SharedState,
    identity: &Identity,
) -> Option<crate::registry::SocketSlot> {
    state
        .registry
        .take_socket_slot(&identity.user_id, state.config.ws_max_sockets_per_user)
}

fn too_many_sockets() -> Response {
    let error = serde_json::json!({"error": TOO_MANY_SOCKETS});
    (axum::http::StatusCode::TOO_MANY_REQUESTS, axum::Json(error)).into_response()
}

/// Seed 002's conversation socket (`/ws/chat/{conversation_id}/`, contract section 11): any role,
/// participants of that session only (403 for anyone else and for an unknown id, as the seed's
/// server answers), spoken through `dialects::conversation_socket`.
pub async fn conversation_upgrade(
    State(state): State<SharedState>,
    headers: HttpHeaders,
    Query(query): Query<BTreeMap<String, String>>,
    axum::extract::Path(conversation_id): axum::extract::Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let identity = match authenticate_acting(
        &state.verifier,
        &headers,
        &query,
        None,
        &state.config.cors_origins,
    ) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    let forbidden = || {
        let error = serde_json::json!({"error": "not a participant of this conversation"});
        (axum::http::StatusCode::FORBIDDEN, axum::Json(error)).into_response()
    };
    let Ok(session_id) = uuid::Uuid::parse_str(&conversation_id) else {
        return forbidden();
    };
    // The workers know who is in a session; the gateway asks once per connection.
    match crate::rest::ask(
        &state,
        &identity,
        shared::subjects::api::SESSIONS_GET,
        &conversation_id,
    )
    .await
    {
        Ok(answer) if answer.status == 200 => {}
        Ok(_) => return forbidden(),
        Err(unavailable) => return unavailable,
    }
    let Some(slot) = socket_slot(&state, &identity) else {
        return too_many_sockets();
    };
    let dialect: Arc<dyn Dialect> = Arc::new(ConversationSocket::new(session_id));
    upgrade
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(TRANSPORT_LIMIT)
        .max_frame_size(TRANSPORT_LIMIT)
        .on_upgrade(move |socket| run(state, identity, socket, Some(dialect), slot))
}

/// Per-socket state the frame handling needs.
pub(crate) struct Connection {
    state: SharedState,
    identity: Identity,
    conn_id: Arc<str>,
    /// The writer task's queue: replies (pong, errors) go the same way as events.
    outbound: socket_queue::Sender<Outgoing>,
    /// Frames published so far (frame ids are `<conn_id>-<n>`).
    frames: u64,
    /// The identity headers of every frame of this socket, built once.
    identity_headers: HeaderMap,
    /// Frames this socket may still send now (all but ping, typing and location).
    bucket: TokenBucket,
    /// Bytes of frames this socket may still send now (every frame but ping).
    bytes: TokenBucket,
    /// Since when this socket's frames have been over the limit.
    abuse: Abuse,
    typing: Coalescer,
    location: Coalescer,
    /// The client protocol of a neighbouring system this socket speaks, if not the native one.
    dialect: Option<Arc<dyn Dialect>>,
}

/// A socket the registry knows: its id, its registration (dropping it unregisters), and its
/// outbound queue (events, replies and close requests for it) with the eviction signal.
pub(crate) struct Opened {
    pub conn_id: Arc<str>,
    pub registration: crate::registry::Registration,
    pub outbound: socket_queue::Sender<Outgoing>,
    pub queued: socket_queue::Receiver<Outgoing>,
    pub evict: Arc<Notify>,
}

/// Registers a new socket of `identity` (its events flow once this returns) and tells the
/// workers it opened. Every client protocol's sockets start here.
pub(crate) async fn open(state: &SharedState, identity: &Identity) -> Opened {
    let conn_id = state.registry.next_conn_id();
    let (outbound, queued) = socket_queue::channel(state.config.ws_outbound_queue);
    let evict = Arc::new(Notify::new());
    let handle = ConnectionHandle {
        conn_id: conn_id.clone(),
        identity: Arc::new(identity.clone()),
        outbound: outbound.clone(),
        evict: evict.clone(),
    };
    let registration = state.registry.register(identity, handle).await;
    state.stats.connection_opened(identity.role);
    tracing::debug!(user_id = %identity.user_id, %conn_id, "socket open");
    announce(state, identity, &conn_id).await;
    Opened {
        conn_id,
        registration,
        outbound,
        queued,
        evict,
    }
}

/// One socket: this task reads and publishes; a writer task (`write_loop`) owns the sending half,
/// so a client whose frames wait on JetStream acks still receives its events, and a stalled
/// writer never blocks reading. The socket is split before the task's future is made, so the
/// future (what every idle socket keeps) holds the halves, not the socket.
fn run(
    state: SharedState,
    identity: Identity,
    socket: WebSocket,
    dialect: Option<Arc<dyn Dialect>>,
    slot: crate::registry::SocketSlot,
) -> impl std::future::Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    read_loop(state, identity, sink, stream, dialect, slot)
}

async fn read_loop(
    state: SharedState,
    identity: Identity,
    sink: SplitSink<WebSocket, Message>,
    mut stream: futures::stream::SplitStream<WebSocket>,
    dialect: Option<Arc<dyn Dialect>>,
    // Held until the socket closes: its place under the per-user cap.
    _slot: crate::registry::SocketSlot,
) {
    let Opened {
        conn_id,
        registration,
        outbound,
        queued,
        evict,
    } = Box::pin(open(&state, &identity)).await;
    let send_timeout = Duration::from_secs(state.config.ws_send_timeout_secs.max(1));
    let mut writer = tokio::spawn(write_loop(
        sink,
        queued,
        evict,
        state.clone(),
        send_timeout,
        conn_id.clone(),
        dialect.clone(),
    ));
    let ping_after = Duration::from_secs(state.config.ws_ping_secs.max(1));
    let idle_limit = Duration::from_secs(state.config.ws_idle_timeout_secs.max(1));
    let check_every = ping_after.min(idle_limit) / 2;
    let mut next_check = Instant::now() + check_every;
    let mut last_heard = Instant::now();
    let mut writer_done = false;
    let mut connection = Connection::new(&state, identity, conn_id, outbound, dialect);
    // A socket upgraded while the gateway stops is closed at once.
    let mut shutdown = state.shutdown.subscribe();
    let mut restarting = *shutdown.borrow_and_update();
    if restarting {
        Box::pin(connection.close(close_code::RESTART, "service restart")).await;
    }
    // One timer for everything this socket waits for besides its frames (a held frame, the
    // token's expiry, the idle check), moved to the earliest: this future is what an idle socket
    // costs, so it holds one timer, and the rare paths below are boxed.
    let timer = tokio::time::sleep_until(next_check.into());
    tokio::pin!(timer);

    loop {
        let held_due = connection.held_due();
        let expires = (!restarting).then(|| connection.token_expiry());
        let wake = [held_due, expires, Some(next_check)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_check);
        if timer.deadline() != wake.into() {
            timer.as_mut().reset(wake.into());
        }
        tokio::select! {
            incoming = stream.next() => {
                let message = match incoming {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        if is_too_large(&error) {
                            Box::pin(connection.refuse_too_large()).await;
                        }
                        break;
                    }
                    None => break,
                };
                last_heard = Instant::now();
                match message {
                    Message::Text(text) => Box::pin(connection.on_client_text(text)).await,
                    Message::Binary(bytes) => Box::pin(connection.on_binary(bytes.len())).await,
                    Message::Close(_) => break,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                // The writer closed the socket (session ended, eviction, idle) or lost it: give the
                // client a moment to answer the close frame, so it reads our reason.
                Box::pin(await_close_reply(&mut stream)).await;
                break;
            }
            // The gateway is stopping: a frame being handled was published before this branch
            // could run (handling is awaited inside the read branch), so close now.
            _ = shutdown.changed(), if !restarting => {
                restarting = true;
                Box::pin(connection.close(close_code::RESTART, "service restart")).await;
            }
            () = &mut timer => {
                let now = Instant::now();
                // A coalesced typing or location frame whose interval has passed.
                if held_due.is_some_and(|due| due <= now) {
                    Box::pin(connection.publish_held()).await;
                }
                // The token ran out and no `auth_refresh` came: the socket's user is no longer
                // vouched for.
                if expires.is_some_and(|expires| expires <= now) {
                    restarting = true;
                    Box::pin(connection.refuse_expired_token()).await;
                }
                if next_check <= now {
                    next_check = now + check_every;
                    let silent = last_heard.elapsed();
                    if silent >= idle_limit {
                        Box::pin(connection.close(close_code::AWAY, "idle timeout")).await;
                    } else if silent >= ping_after {
                        let _ = connection.outbound.try_send(Outgoing::Ping);
                    }
                }
            }
        }
    }
    state.stats.connection_closed(connection.identity.role);
    // With the registration and this task's sender gone, the writer sends what is still queued
    // (an error and its close frame, say) and stops.
    drop(registration);
    drop(connection);
    if !writer_done
        && tokio::time::timeout(send_timeout, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// After the writer closed the socket: reads until the client's close frame, for 2 s at most.
async fn await_close_reply(stream: &mut futures::stream::SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Close(_) = message {
                break;
            }
        }
    })
    .await;
}

/// Sends what is queued for the socket, until it is told to close, the client is evicted, or the
/// socket fails. A write that stalls for `send_timeout` (the client stopped reading and the kernel
/// buffers are full) drops the socket.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut queued: socket_queue::Receiver<Outgoing>,
    evict: Arc<Notify>,
    state: SharedState,
    send_timeout: Duration,
    conn_id: Arc<str>,
    dialect: Option<Arc<dyn Dialect>>,
) {
    loop {
        let message = tokio::select! {
            next = queued.recv() => match next {
                Some(Outgoing::Frame(frame)) => {
                    let frame = match &dialect {
                        None => frame,
                        Some(dialect) => match dialect.outbound(frame.as_str()) {
                            Some(translated) => Utf8Bytes::from(translated),
                            None => continue,
                        },
                    };
                    state.stats.frame_out();
                    Message::Text(frame)
                }
                Some(Outgoing::Ping) => Message::Ping(Bytes::new()),
                Some(Outgoing::Close) => close_frame(close_code::NORMAL, "session ended"),
                None => return,
                Some(Outgoing::CloseWith(code, reason)) => close_frame(code, reason),
            },
            () = evict.notified() => {
                tracing::info!(%conn_id, "evicting a client that cannot keep up");
                close_frame(close_code::AGAIN, "client too slow: outbound queue full")
            }
        };
        let closing = matches!(message, Message::Close(_));
        match tokio::time::timeout(send_timeout, sink.send(message)).await {
            Ok(Ok(())) if !closing => {}
            Ok(Ok(())) | Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(%conn_id, "dropping a socket whose writes stalled");
                metrics::counter!("gateway_slow_client_evictions_total").increment(1);
                return;
            }
        }
    }
}

/// The interval between two forwarded frames at `per_second`.
fn interval_of(per_second: f64) -> Duration {
    Duration::from_secs_f64(1.0 / per_second.max(0.001))
}

pub(crate) async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Tells the workers a socket opened (`user.<id>.connected`): the lifecycle worker records the
/// user and replays a provider's pending work orders to this socket; the chat worker re-sends the
/// messages not yet delivered to the user.
pub async fn announce(state: &SharedState, identity: &Identity, conn_id: &str) {
    let mut headers = identity_headers(identity, conn_id);
    if let Some(name) = &identity.name {
        headers.insert(headers::USER_NAME, name.as_str());
    }
    let subject = shared::subjects::user_connected(&identity.user_id);
    if let Err(error) = state
        .nats
        .publish_with_headers(subject, headers, Bytes::new())
        .await
    {
        tracing::warn!(%error, "cannot announce a connection");
    }
}

fn identity_headers(identity: &Identity, conn_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(headers::USER_ID, identity.user_id.as_str());
    headers.insert(headers::ROLE, identity.role.as_str());
    headers.insert(headers::CONN_ID, conn_id);
    headers
}

fn is_too_large(error: &axum::Error) -> bool {
    let text = error.to_string();
    text.contains("Space limit exceeded") || text.contains("too long") || text.contains("Capacity")
}

impl Connection {
    pub(crate) fn new(
        state: &SharedState,
        identity: Identity,
        conn_id: Arc<str>,
        outbound: socket_queue::Sender<Outgoing>,
        dialect: Option<Arc<dyn Dialect>>,
    ) -> Connection {
        let config = &state.config;
        Connection {
            state: state.clone(),
            identity_headers: identity_headers(&identity, &conn_id),
            identity,
            conn_id,
            outbound,
            frames: 0,
            bucket: TokenBucket::new(
                config.ws_rate_per_sec,
                config.ws_rate_burst.max(1.0),
                Instant::now(),
            ),
            bytes: TokenBucket::new(
                config.ws_rate_bytes_per_sec,
                config.ws_rate_bytes_per_sec * 4.0,
                Instant::now(),
            ),
            abuse: Abuse::default(),
            typing: Coalescer::new(interval_of(config.ws_rate_typing_per_sec)),
            location: Coalescer::new(interval_of(config.ws_rate_location_per_sec)),
            dialect,
        }
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// When the socket's token (the one it opened with, or its last `auth_refresh`) runs out,
    /// leeway included.
    pub(crate) fn token_expiry(&self) -> Instant {
        let now_unix = chrono::Utc::now().timestamp();
        let left = self
            .identity
            .expires_at
            .saturating_add(shared::auth::LEEWAY_SECS as i64)
            .saturating_sub(now_unix)
            .max(0);
        // Far enough for "never" without overflowing an Instant.
        Instant::now() + Duration::from_secs((left as u64).min(10 * 365 * 24 * 3600))
    }

    /// `auth_refresh`: a valid token of the same user and role extends the socket's life.
    fn refresh_token(&mut self, token: &str) -> Event {
        match self.state.verifier.verify(token) {
            Ok(fresh)
                if fresh.user_id == self.identity.user_id && fresh.role == self.identity.role =>
            {
                self.identity.expires_at = fresh.expires_at;
                Event::AuthRefreshed {
                    exp: fresh.expires_at,
                }
            }
            Ok(_) => Event::error(errors::TOKEN_MISMATCH, Some("auth_refresh"), None),
            Err(error) => Event::error(error.to_string(), Some("auth_refresh"), None),
        }
    }

    /// Takes `frames` tokens of the frame bucket and `length` of the byte budget for a frame
    /// that is not a native one the judge sees (binary, a dialect's, a Socket.IO request): the
    /// rate limit's refusal when over either.
    pub(crate) async fn admit_bytes(&mut self, length: usize, frames: u32) -> Option<Event> {
        let now = Instant::now();
        if self.bytes.take_many(now, length as f64) && self.bucket.take_many(now, f64::from(frames))
        {
            return None;
        }
        self.rate_limited(None, now).await
    }

    /// Queues a reply for this socket (waits if the queue is full: back-pressure on this client).
    pub(crate) async fn reply(&self, event: &Event) {
        let _ = self
            .outbound
            .send(Outgoing::Frame(Utf8Bytes::from(event.to_json())))
            .await;
    }

    /// A frame over the transport's limit: the error, then a close with 1009.
    async fn refuse_too_large(&self) {
        self.reply(&Event::error(errors::FRAME_TOO_LARGE, None, None))
            .await;
        self.close(close_code::SIZE, "frame too large").await;
    }

    /// The token expired: the error, then a close with 1008.
    async fn refuse_expired_token(&self) {
        self.reply(&Event::error(errors::TOKEN_EXPIRED, None, None))
            .await;
        self.close(close_code::POLICY, "token expired").await;
    }

    /// A binary frame: counted against the socket's limits and refused (the protocol is JSON
    /// text).
    async fn on_binary(&mut self, length: usize) {
        self.state.stats.frame_in();
        let answer = match self.admit_bytes(length, 1).await {
            Some(refusal) => refusal,
            None => Event::error(errors::INVALID_JSON, None, None),
        };
        self.reply(&answer).await;
    }

    /// Asks the writer to close the socket; the read loop ends when it has.
    pub(crate) async fn close(&self, code: u16, reason: &'static str) {
        let _ = self.outbound.send(Outgoing::CloseWith(code, reason)).await;
    }

    /// A text frame from the client: a dialect's is translated to a native frame first.
    async fn on_client_text(&mut self, text: Utf8Bytes) {
        let Some(dialect) = self.dialect.clone() else {
            return self.on_text(text).await;
        };
        if text.len() > FRAME_LIMIT {
            return self.on_text(text).await;
        }
        match dialect.inbound(text.as_str()) {
            Ok(Some(native)) => self.on_text(Utf8Bytes::from(native)).await,
            // Frames the dialect ignores or cannot read cost the socket as much as any other.
            Ok(None) => {
                self.state.stats.frame_in();
                if let Some(refusal) = self.admit_bytes(text.len(), 1).await {
                    self.reply(&refusal).await;
                }
            }
            Err(reason) => {
                self.state.stats.frame_in();
                if let Some(refusal) = self.admit_bytes(text.len(), 1).await {
                    return self.reply(&refusal).await;
                }
                let _ = self
                    .outbound
                    .send(Outgoing::Frame(Utf8Bytes::from(dialect.error(&reason))))
                    .await;
            }
        }
    }

    /// A native frame from this socket, answered on it when it must be.
    async fn on_text(&mut self, text: Utf8Bytes) {
        if let Some(answer) = self.handle(text).await {
            self.reply(&answer).await;
        }
    }

    /// Judges, limits and publishes one native frame; the answer it gets at once (a `pong`, or the
    /// error saying why it went nowhere), if any. Socket.IO turns that answer into an
    /// acknowledgement, the WebSocket sockets send it as it is.
    pub(crate) async fn handle(&mut self, text: Utf8Bytes) -> Option<Event> {
        self.state.stats.frame_in();
        if text.len() > FRAME_LIMIT {
            self.reply(&Event::error(errors::FRAME_TOO_LARGE, None, None))
                .await;
            self.close(close_code::SIZE, "frame too large").await;
            return None;
        }
        let verdict = inbound::judge(text.as_str(), self.identity.role);
        let now = Instant::now();
        // Streams of typing and location frames are thinned out, not refused.
        let verdict = match verdict {
            Verdict::Publish {
                kind: kind @ (FrameKind::TypingIndicator | FrameKind::LocationUpdate),
                subject,
                ..
            } => {
                let coalescer = if kind == FrameKind::TypingIndicator {
                    &mut self.typing
                } else {
                    &mut self.location
                };
                if let Some(now_due) = coalescer.offer(now, Held { subject, text }) {
                    return self
                        .publish_or_refuse(kind, now_due.subject, false, now_due.text)
                        .await;
                }
                return None;
            }
            other => other,
        };
        // Every frame but `ping` costs its bytes and a token (`resume`, which makes the workers
        // read and send up to a page of messages, costs ten).
        match &verdict {
            Verdict::Ping => {}
            Verdict::Publish { kind, .. } => {
                let cost = if *kind == FrameKind::Resume {
                    10.0
                } else {
                    1.0
                };
                if !self.within_limits(now, text.len(), cost) {
                    let kind = *kind;
                    return self.rate_limited(Some(kind.name().to_owned()), now).await;
                }
            }
            Verdict::AuthRefresh { .. } => {
                if !self.within_limits(now, text.len(), 1.0) {
                    return self
                        .rate_limited(Some(String::from("auth_refresh")), now)
                        .await;
                }
            }
            Verdict::Refuse { request_type, .. } => {
                if !self.within_limits(now, text.len(), 1.0) {
                    let request_type = request_type.clone();
                    return self.rate_limited(request_type, now).await;
                }
            }
        }
        match verdict {
            Verdict::Ping => Some(Event::Pong {
                timestamp: shared::time::now(),
            }),
            Verdict::AuthRefresh { token } => Some(self.refresh_token(&token)),
            Verdict::Refuse {
                error,
                request_type,
                session_id,
            } => Some(Event::Error {
                error: error.into_owned(),
                request_type,
                session_id,
                client_message_id: None,
            }),
            Verdict::Publish {
                kind,
                subject,
                durable,
            } => self.publish_or_refuse(kind, subject, durable, text).await,
        }
    }

    /// Takes `cost` frame tokens and `length` bytes if both budgets have them (nothing is taken
    /// otherwise).
    fn within_limits(&mut self, now: Instant, length: usize, cost: f64) -> bool {
        if !self.bytes.has(now, length as f64) {
            return false;
        }
        if !self.bucket.take_many(now, cost) {
            return false;
        }
        self.bytes.take_many(now, length as f64)
    }

    /// Takes one request that is not a native frame (a Socket.IO room join) from the socket's
    /// allowance: the rate limit's refusal, if over it.
    pub(crate) async fn admit(&mut self, request_type: &str) -> Option<Event> {
        let now = Instant::now();
        if self.bucket.take(now) {
            return None;
        }
        self.rate_limited(Some(request_type.to_owned()), now).await
    }

    /// Publishes a frame the socket's protocol sends on the client's behalf (a Socket.IO client
    /// never sends delivery receipts: the gateway does when it has emitted the message), judged
    /// like any frame but outside the client's rate allowance.
    pub(crate) async fn publish_on_behalf(&mut self, text: Utf8Bytes) -> Option<Event> {
        match inbound::judge(text.as_str(), self.identity.role) {
            Verdict::Publish {
                kind,
                subject,
                durable,
            } => self.publish_or_refuse(kind, subject, durable, text).await,
            Verdict::Ping | Verdict::AuthRefresh { .. } | Verdict::Refuse { .. } => None,
        }
    }

    /// Publishes; the error that tells the client why it could not, if so.
    async fn publish_or_refuse(
        &mut self,
        kind: FrameKind,
        subject: String,
        durable: bool,
        text: Utf8Bytes,
    ) -> Option<Event> {
        let error = self.publish(subject, durable, text).await.err()?;
        let reason = match error {
            PublishFailure::StreamFull => errors::SERVER_BUSY,
            PublishFailure::Unavailable => errors::UNAVAILABLE,
        };
        Some(Event::error(reason, Some(kind.name()), None))
    }

    /// A frame over the socket's limit: answered, not published; a socket that keeps it up for
    /// `WS_RATE_CLOSE_SECS` is closed with 1008.
    async fn rate_limited(&mut self, request_type: Option<String>, now: Instant) -> Option<Event> {
        metrics::counter!("gateway_rate_limited_total").increment(1);
        let patience = Duration::from_secs(self.state.config.ws_rate_close_secs.max(1));
        if self.abuse.refused(now, patience) {
            tracing::info!(conn_id = %self.conn_id, "closing a socket that stays over its rate limit");
            self.close(close_code::POLICY, "rate limit exceeded").await;
            return None;
        }
        Some(Event::Error {
            error: errors::RATE_LIMITED.to_owned(),
            request_type,
            session_id: None,
            client_message_id: None,
        })
    }

    /// When the next held (coalesced) frame is due.
    pub(crate) fn held_due(&self) -> Option<Instant> {
        match (self.typing.due(), self.location.due()) {
            (Some(typing), Some(location)) => Some(typing.min(location)),
            (typing, location) => typing.or(location),
        }
    }

    /// Publishes the held frames that are due.
    pub(crate) async fn publish_held(&mut self) {
        let now = Instant::now();
        if let Some(held) = self.typing.take_due(now)
            && let Some(refusal) = self
                .publish_or_refuse(FrameKind::TypingIndicator, held.subject, false, held.text)
                .await
        {
            self.reply(&refusal).await;
        }
        if let Some(held) = self.location.take_due(now)
            && let Some(refusal) = self
                .publish_or_refuse(FrameKind::LocationUpdate, held.subject, false, held.text)
                .await
        {
            self.reply(&refusal).await;
        }
    }

    /// Publishes the frame unchanged with the identity headers; durable topics wait for the
    /// JetStream ack, so an acknowledged frame is never lost. A publish whose ack does not come is
    /// sent again with the same `Nats-Msg-Id` (the stream stores it once), within the stream's
    /// de-duplication window.
    async fn publish(
        &mut self,
        subject: String,
        durable: bool,
        text: Utf8Bytes,
    ) -> Result<(), PublishFailure> {
        self.frames += 1;
        let frame_id = format!("{}-{}", self.conn_id, self.frames);
        let mut headers = self.identity_headers.clone();
        headers.insert(headers::TRACE_ID, frame_id.as_str());
        let payload = Bytes::from(text);
        let started = Instant::now();
        if durable {
            headers.insert(headers::MSG_ID, frame_id.as_str());
            let mut attempt = 0;
            loop {
                attempt += 1;
                let acked = match self
                    .state
                    .jetstream
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await
                {
                    Ok(ack) => ack.await,
                    Err(error) => Err(error),
                };
                match acked {
                    Ok(_) => break,
                    Err(error) if is_stream_full(&error) => {
                        metrics::counter!("gateway_stream_full_total").increment(1);
                        return Err(PublishFailure::StreamFull);
                    }
                    Err(error) if attempt < PUBLISH_ATTEMPTS => {
                        tracing::debug!(%error, attempt, "publish not acknowledged; sending again");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "publish not acknowledged");
                        return Err(PublishFailure::Unavailable);
                    }
                }
            }
            self.state
                .stats
                .publish_durable
                .record(started.elapsed().as_secs_f64());
        } else {
            self.state
                .nats
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|_| PublishFailure::Unavailable)?;
            self.state
                .stats
                .publish_core
                .record(started.elapsed().as_secs_f64());
        }
        Ok(())
    }
}

/// Attempts at a durable publish whose ack does not come (each waits for the client's request
/// timeout): well inside the INBOUND stream's 30 s de-duplication window.
const PUBLISH_ATTEMPTS: u32 = 3;

/// Why a frame was not published.
#[derive(Debug)]
enum PublishFailure {
    /// The stream refuses new frames (full): "server busy, please retry".
    StreamFull,
    /// NATS did not answer.
    Unavailable,
}

/// The stream's refusals when it is at its limits (`discard: new`): insufficient resources, or
/// maximum bytes / messages exceeded.
fn is_stream_full(error: &async_nats::jetstream::context::PublishError) -> bool {
    let text = error.to_string();
    text.contains("maximum") || text.contains("insufficient resources") || text.contains("10047")
}
