//! Socket.IO v5 at `/socket.io/` (contract section 11), served by `socketioxide` on the gateway's
//! own port, for the front-ends of seeds 003 and 004. A Socket.IO socket is a socket like any
//! other here: it registers with the registry (so the user's events, presence and re-sends reach
//! it unchanged) and its client events become native frames that go through the very frame
//! handling of `socket::Connection` (judge, limits, identity headers, subjects). What is Socket.IO's
//! own lives here: the handshake's token, rooms (the sessions a socket joined, checked with the
//! workers like seed 002's handshake; a room's chat is shown only once it is joined, so joining
//! asks the chat worker for the session's messages the socket missed, the re-send on connect
//! having come before any room), acknowledgements, and emitting. The vocabularies
//! themselves are `gateway::dialects::socketio`.
//!
//! Order: socketioxide runs each event handler in a task of its own, which would let a client's
//! events overtake each other. Events are taken instead by `InOrder`, a handler called in the
//! socket's packet order, which queues them for the socket's one task.

use crate::SharedState;
use crate::registry::Outgoing;
use crate::socket::{self, Connection, Opened};
use axum::extract::ws::Utf8Bytes;
use gateway::dialects::socketio::{self as vocabulary, Request, Vocabulary};
use serde_json::{Map, Value, json};
use shared::auth::Identity;
use shared::frames::{Event, errors};
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{AckSender, SocketRef, State, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts, MessageHandler};
use socketioxide::socket::Socket;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// Client events waiting for the socket's task; more are refused with "server busy".
const EVENT_QUEUE: usize = 64;
/// Rooms one socket may have joined at once.
const MAX_ROOMS: usize = 64;
/// `send_message`s awaiting their acknowledgement on one socket.
const MAX_PENDING_ACKS: usize = 256;

/// The Socket.IO layer for the router, and the handle that closes every socket at shutdown.
pub fn layer(state: SharedState) -> (socketioxide::layer::SocketIoLayer, SocketIo) {
    // Small buffers, as on the native sockets: the gateway holds very many idle sockets.
    let (layer, io) = SocketIo::builder()
        .ws_read_buffer_size(1024)
        .max_payload(64 * 1024 + 1024)
        .ping_interval(Duration::from_secs(state.config.ws_ping_secs.max(1)))
        .ping_timeout(Duration::from_secs(20))
        .with_state(state)
        .build_layer();
    io.ns("/", start.with(admit));
    (layer, io)
}

/// What the handshake leaves for the connect handler: who connected, and their event queue.
#[derive(Clone)]
struct Admitted {
    identity: Identity,
    /// The socket's place under the per-user cap, taken at the handshake; the socket's task
    /// holds it until it ends.
    slot: Arc<Mutex<Option<crate::registry::SocketSlot>>>,
    events: Arc<Mutex<Option<mpsc::Receiver<Work>>>>,
    closed: Arc<Notify>,
    sender: mpsc::Sender<Work>,
}

/// The handshake: a valid token (`auth: {token}`, `?token=`, `Authorization` or the cookie), and
/// room for one more socket of the user; anything else is the client's `connect_error`. The
/// socket's event handler is registered here, before the client hears it is connected, so no
/// early event finds nobody listening.
async fn admit(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(state): State<SharedState>,
) -> Result<(), String> {
    let parts = socket.req_parts();
    let query = axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(&parts.uri)
        .map(|query| query.0)
        .unwrap_or_default();
    let handshake_token = auth
        .ok()
        .and_then(|auth| auth.get("token").and_then(Value::as_str).map(str::to_owned));
    let identity = match handshake_token {
        Some(token) => state
            .verifier
            .verify(&token)
            .map_err(|error| error.to_string())?,
        None => crate::auth::authenticate_acting(
            &state.verifier,
            &parts.headers,
            &query,
            None,
            &state.config.cors_origins,
        )
        .map_err(|refusal| refusal.message())?,
    };
    let Some(slot) = socket::socket_slot(&state, &identity) else {
        return Err(String::from(socket::TOO_MANY_SOCKETS));
    };
    let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
    let closed = Arc::new(Notify::new());
    socket.on_fallback(InOrder {
        events: sender.clone(),
    });
    socket.on_disconnect({
        let closed = closed.clone();
        async move || closed.notify_one()
    });
    socket.extensions.insert(Admitted {
        identity,
        slot: Arc::new(Mutex::new(Some(slot))),
        events: Arc::new(Mutex::new(Some(receiver))),
        closed,
        sender,
    });
    Ok(())
}

/// The connect handler: starts the socket's task.
async fn start(socket: SocketRef, State(state): State<SharedState>) {
    let Some(admitted) = socket.extensions.get::<Admitted>() else {
        let _ = socket.disconnect();
        return;
    };
    let Some(events) = lock(&admitted.events).take() else {
        return;
    };
    tokio::spawn(serve(state, socket, admitted, events));
}

/// One unit of the socket task's work, in order.
enum Work {
    /// A client event, with its acknowledgement when the client asked for one.
    Client {
        event: String,
        data: Value,
        ack: Option<AckSender>,
    },
    /// A native frame the gateway sends on the client's behalf (a delivery receipt).
    OnBehalf(String),
}

/// Takes every client event in the order the socket received it (socketioxide calls a handler
/// in packet order, but runs a closure handler in a task of its own).
#[derive(Clone)]
struct InOrder {
    events: mpsc::Sender<Work>,
}

impl MessageHandler<LocalAdapter, InOrder> for InOrder {
    fn call(
        &self,
        socket: Arc<Socket<LocalAdapter>>,
        mut value: socketioxide::handler::Value,
        ack_id: Option<i64>,
    ) {
        let Ok(socketioxide::extract::Event(event)) =
            socketioxide::extract::Event::from_message_parts(&socket, &mut value, &ack_id)
        else {
            return;
        };
        let data = match TryData::<Value>::from_message_parts(&socket, &mut value, &ack_id) {
            Ok(TryData(Ok(data))) => data,
            _ => Value::Null,
        };
        let ack =
            ack_id.and_then(|_| AckSender::from_message_parts(&socket, &mut value, &ack_id).ok());
        if let Err(mpsc::error::TrySendError::Full(Work::Client { ack, .. })) =
            self.events.try_send(Work::Client { event, data, ack })
        {
            metrics::counter!("gateway_rate_limited_total").increment(1);
            answer_error(&socket, ack, errors::SERVER_BUSY);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Answers a refused event: in its acknowledgement when the client asked for one, else as an
/// `error` event.
fn answer_error(socket: &Socket<LocalAdapter>, ack: Option<AckSender>, error: &str) {
    match ack {
        Some(ack) => {
            let _ = ack.send(&json!({"ok": false, "error": error}));
        }
        None => {
            let _ = socket.emit("error", &json!({"message": error}));
        }
    }
}

fn answer_ok(ack: Option<AckSender>) {
    if let Some(ack) = ack {
        let _ = ack.send(&json!({"ok": true}));
    }
}

/// A `send_message` whose acknowledgement waits for the chat worker's answer.
struct PendingAck {
    session_id: String,
    client_message_id: String,
    temp_id: Option<Value>,
    ack: AckSender,
}

/// What the socket's task and its emitter share: the rooms joined and the acknowledgements due.
#[derive(Default)]
struct Rooms {
    joined: Mutex<HashMap<String, Vocabulary>>,
    pending: Mutex<Vec<PendingAck>>,
    /// The socket they belong to, which a join asks the chat worker to send what it missed.
    conn_id: Arc<str>,
}

impl Rooms {
    fn vocabulary_of(&self, session_id: &str) -> Option<Vocabulary> {
        lock(&self.joined).get(session_id).copied()
    }

    /// The acknowledgement a native answer settles: the `send_message` with its
    /// `client_message_id`, or (the workers' errors carry none) this socket's oldest message of
    /// the session, since one session's frames are answered in order.
    fn settled_by(&self, session_id: &str, client_message_id: Option<&str>) -> Option<PendingAck> {
        let mut pending = lock(&self.pending);
        let position = match client_message_id {
            Some(id) => pending
                .iter()
                .position(|waiting| waiting.client_message_id == id)?,
            None => pending
                .iter()
                .position(|waiting| waiting.session_id == session_id)?,
        };
        Some(pending.remove(position))
    }
}

/// One Socket.IO socket: this task handles the client's events in order; `emit_events` shows
/// the user's native events to the client.
async fn serve(
    state: SharedState,
    socket: SocketRef,
    admitted: Admitted,
    mut events: mpsc::Receiver<Work>,
) {
    let Admitted {
        identity,
        closed,
        sender: on_behalf,
        slot,
        ..
    } = admitted;
    let _slot = lock(&slot).take();
    let Opened {
        conn_id,
        registration,
        outbound,
        queued,
        evict,
    } = Box::pin(socket::open(&state, &identity)).await;
    let rooms = Arc::new(Rooms {
        conn_id: conn_id.clone(),
        ..Rooms::default()
    });
    let mut emitter = tokio::spawn(emit_events(
        socket.clone(),
        queued,
        evict,
        rooms.clone(),
        on_behalf,
        state.clone(),
    ));
    let mut connection = Connection::new(&state, identity, conn_id.clone(), outbound, None);
    let mut shutdown = state.shutdown.subscribe();
    let mut generated = 0u64;
    loop {
        let held_due = connection.held_due();
        tokio::select! {
            work = events.recv() => match work {
                Some(Work::Client { event, data, ack }) => {
                    let mut make_id = || {
                        generated += 1;
                        format!("{}{conn_id}-{generated}", vocabulary::GENERATED_ID_PREFIX)
                    };
                    match vocabulary::request(&event, &data, &mut make_id) {
                        Ok(request) => {
                            Box::pin(handle(&state, &socket, &mut connection, &rooms, request, ack, &event))
                                .await;
                        }
                        Err(reason) => {
                            state.stats.frame_in();
                            // An event that is refused costs like any other.
                            match connection.admit(&event).await {
                                Some(refusal) => answer_event(&socket, ack, refusal),
                                None => answer_error(&socket, ack, &reason),
                            }
                        }
                    }
                }
                Some(Work::OnBehalf(native)) => {
                    Box::pin(connection.publish_on_behalf(Utf8Bytes::from(native))).await;
                }
                None => break,
            },
            () = closed.notified() => break,
            _ = &mut emitter => break,
            _ = shutdown.changed() => {
                Box::pin(connection.publish_held()).await;
                break;
            }
            _ = socket::sleep_until(held_due), if held_due.is_some() => Box::pin(connection.publish_held()).await,
            // The handshake's token ran out: the user is no longer vouched for.
            _ = tokio::time::sleep_until(connection.token_expiry().into()) => break,
        }
    }
    state.stats.connection_closed(connection.identity().role);
    drop(registration);
    emitter.abort();
    let _ = socket.disconnect();
}

/// Carries out one client request.
async fn handle(
    state: &SharedState,
    socket: &SocketRef,
    connection: &mut Connection,
    rooms: &Rooms,
    request: Request,
    ack: Option<AckSender>,
    event: &str,
) {
    match request {
        Request::Join {
            session_id,
            vocabulary,
        } => {
            state.stats.frame_in();
            if let Some(refusal) = connection.admit(event).await {
                return answer_event(socket, ack, refusal);
            }
            join(
                state, socket, connection, rooms, session_id, vocabulary, ack,
            )
            .await;
        }
        Request::Leave { session_id } => {
            state.stats.frame_in();
            // A leave costs like a join: a join/leave loop must not be free.
            if let Some(refusal) = connection.admit(event).await {
                return answer_event(socket, ack, refusal);
            }
            lock(&rooms.joined).remove(&session_id.to_string());
            answer_ok(ack);
        }
        Request::Send {
            session_id,
            native,
            client_message_id,
            temp_id,
        } => {
            let Some(ack) = ack else {
                if let Some(answer) = connection.handle(Utf8Bytes::from(native)).await {
                    answer_event(socket, None, answer);
                }
                return;
            };
            let session_id = session_id.to_string();
            {
                let mut pending = lock(&rooms.pending);
                if pending.len() >= MAX_PENDING_ACKS {
                    drop(pending);
                    return answer_error(socket, Some(ack), errors::SERVER_BUSY);
                }
                // Before publishing: the worker's answer may come before the publish returns.
                pending.push(PendingAck {
                    session_id: session_id.clone(),
                    client_message_id: client_message_id.clone(),
                    temp_id,
                    ack,
                });
            }
            if let Some(answer) = connection.handle(Utf8Bytes::from(native)).await
                && let Some(waiting) = rooms.settled_by(&session_id, Some(&client_message_id))
            {
                answer_event(socket, Some(waiting.ack), answer);
            }
        }
        Request::Frame { native } => match connection.handle(Utf8Bytes::from(native)).await {
            Some(answer) => answer_event(socket, ack, answer),
            None => answer_ok(ack),
        },
    }
}

/// A native answer (an error) to a client event.
fn answer_event(socket: &Socket<LocalAdapter>, ack: Option<AckSender>, answer: Event) {
    let reason = match &answer {
        Event::Error { error, .. } => error.clone(),
        _ => return answer_ok(ack),
    };
    answer_error(socket, ack, &reason);
}

/// Joins a session's room if the workers say the user takes part in it: `joined_chat` (seed
/// 004), then a `user_joined` for each other participant online now, then the session's messages
/// not yet delivered to the user.
async fn join(
    state: &SharedState,
    socket: &SocketRef,
    connection: &Connection,
    rooms: &Rooms,
    session_id: uuid::Uuid,
    vocabulary: Vocabulary,
    ack: Option<AckSender>,
) {
    let identity = connection.identity();
    let answer = crate::rest::ask(
        state,
        identity,
        shared::subjects::api::SESSIONS_GET,
        &session_id.to_string(),
    )
    .await;
    let snapshot = match answer {
        Ok(answer) if answer.status == 200 => answer.body,
        Ok(_) => {
            let refusal = match vocabulary {
                Vocabulary::JobChat => "not a participant of this chat",
                Vocabulary::Escrow => "not a participant of this escrow",
            };
            return answer_error(socket, ack, refusal);
        }
        Err(_) => return answer_error(socket, ack, errors::UNAVAILABLE),
    };
    {
        let mut joined = lock(&rooms.joined);
        if joined.len() >= MAX_ROOMS && !joined.contains_key(&session_id.to_string()) {
            drop(joined);
            return answer_error(socket, ack, "too many rooms joined on this socket");
        }
        joined.insert(session_id.to_string(), vocabulary);
    }
    answer_ok(ack);
    if vocabulary == Vocabulary::JobChat {
        let _ = socket.emit("joined_chat", &json!({"chatId": session_id}));
    }
    let timestamp = shared::time::now();
    for online in vocabulary::online_now(
        &snapshot["presence"],
        identity.role.as_str(),
        &session_id,
        vocabulary,
        &timestamp,
    ) {
        let _ = socket.emit("user_joined", &online);
    }
    ask_for_missed(state, identity, &rooms.conn_id, session_id).await;
}

/// Asks the chat worker for the session's messages this socket missed (`session.<id>.joined`,
/// with the identity headers of a frame). The re-send on connect came before the room existed,
/// and a room's chat is shown only once it is joined: the worker answers to this socket only,
/// and the emitter shows (and acknowledges) them like any chat message of the room. Best effort
/// like the connect notice: a lost request is made good by the next join or connection.
async fn ask_for_missed(
    state: &SharedState,
    identity: &Identity,
    conn_id: &str,
    session_id: uuid::Uuid,
) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(shared::headers::USER_ID, identity.user_id.as_str());
    headers.insert(shared::headers::ROLE, identity.role.as_str());
    headers.insert(shared::headers::CONN_ID, conn_id);
    let subject = shared::subjects::session_joined(&session_id);
    if let Err(error) = state
        .nats
        .publish_with_headers(subject, headers, bytes::Bytes::new())
        .await
    {
        tracing::warn!(%error, "cannot ask for a joined room's missed messages");
    }
}

/// Shows the user's native events to the client until the socket goes, is evicted or is told
/// to close. Settles the acknowledgements that wait for the chat worker, and sends a delivery
/// receipt for each chat message shown.
async fn emit_events(
    socket: SocketRef,
    mut queued: crate::socket_queue::Receiver<Outgoing>,
    evict: Arc<Notify>,
    rooms: Arc<Rooms>,
    on_behalf: mpsc::Sender<Work>,
    state: SharedState,
) {
    loop {
        let frame = tokio::select! {
            next = queued.recv() => match next {
                Some(Outgoing::Frame(frame)) => frame,
                // Engine.IO pings the client itself; a session's end is shown as its event,
                // and the socket stays for the user's other sessions.
                Some(Outgoing::Ping | Outgoing::Close) => continue,
                Some(Outgoing::CloseWith(..)) | None => return,
            },
            () = evict.notified() => {
                tracing::info!(sid = %socket.id, "evicting a Socket.IO client that cannot keep up");
                return;
            }
        };
        let Ok(Value::Object(native)) = serde_json::from_str::<Value>(frame.as_str()) else {
            continue;
        };
        let temp_id = settle(&native, &rooms);
        if matches!(temp_id, Settled::Answered) {
            continue;
        }
        let Some((name, mut data)) =
            vocabulary::event(&native, |session_id| rooms.vocabulary_of(session_id))
        else {
            continue;
        };
        if let Settled::Sent(Some(temp_id)) = temp_id {
            data["tempId"] = temp_id;
        }
        if let Err(error) = socket.emit(name, &data) {
            tracing::debug!(%error, "cannot emit to a Socket.IO client");
            if matches!(
                error,
                socketioxide::SendError::Socket(socketioxide::SocketError::InternalChannelFull)
            ) {
                metrics::counter!("gateway_slow_client_evictions_total").increment(1);
            }
            return;
        }
        state.stats.frame_out();
        if let Some(receipt) = delivery_receipt(&native) {
            // Best effort: a receipt not sent leaves the message to be re-sent on reconnect.
            let _ = on_behalf.try_send(Work::OnBehalf(receipt));
        }
    }
}

/// What a native event did to the acknowledgements due.
enum Settled {
    Nothing,
    /// It answered a `send_message` with an error: shown in the acknowledgement only.
    Answered,
    /// It answered a `send_message` as stored; the temporary id as the client sent it.
    Sent(Option<Value>),
}

fn settle(native: &Map<String, Value>, rooms: &Rooms) -> Settled {
    let text = |name: &str| native.get(name).and_then(Value::as_str);
    let session_id = text("session_id").unwrap_or_default();
    match text("type") {
        Some("message_sent") => {
            let Some(waiting) =
                text("client_message_id").and_then(|id| rooms.settled_by(session_id, Some(id)))
            else {
                return Settled::Nothing;
            };
            let _ = waiting.ack.send(&json!({
                "ok": true,
                "id": native.get("message_id"),
                "seq": native.get("seq"),
            }));
            Settled::Sent(waiting.temp_id)
        }
        Some("error") if text("request_type") == Some("chat_message") => {
            match rooms.settled_by(session_id, text("client_message_id")) {
                Some(waiting) => {
                    let error = text("error").unwrap_or("error");
                    let _ = waiting.ack.send(&json!({"ok": false, "error": error}));
                    Settled::Answered
                }
                None => Settled::Nothing,
            }
        }
        _ => Settled::Nothing,
    }
}

/// The delivery receipt for a chat message just shown to the client (a Socket.IO client sends
/// none itself), unless it was delivered already.
fn delivery_receipt(native: &Map<String, Value>) -> Option<String> {
    if native.get("type").and_then(Value::as_str) != Some("chat_message")
        || native.get("delivery_status").and_then(Value::as_str) != Some("sent")
    {
        return None;
    }
    let receipt = json!({
        "type": "message_delivered",
        "message_id": native.get("message_id")?,
        "session_id": native.get("session_id")?,
    });
    Some(receipt.to_string())
}
