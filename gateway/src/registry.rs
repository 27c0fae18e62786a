//! Who is connected to this gateway instance: each user's sockets, and one NATS subscription per
//! connected user on `user.<id>.events` whose events go to all of that user's sockets (or, with a
//! `conn-id` header, to that one). The subscription starts with the user's first socket and ends
//! with their last.
//!
//! Delivery never waits long on a socket: each socket has a bounded queue, and a socket whose queue
//! is full is evicted (its task closes it), so one slow phone cannot hold up anyone else. Events
//! addressed to one socket (a `resume` page, the re-sent messages of a connect) are replays the
//! socket asked for, often more at once than the queue holds: those wait up to
//! `REPLAY_PATIENCE` for room, and only a socket that drains nothing in that time is evicted.

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use shared::auth::Identity;
use shared::headers;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

/// What a socket's writer is asked to send.
#[derive(Debug)]
pub enum Outgoing {
    Frame(Utf8Bytes),
    /// Close the socket with 1000 (the session ended).
    Close,
    /// Close with this code and reason (idle, frame too large).
    CloseWith(u16, &'static str),
    /// A WebSocket ping to a silent client.
    Ping,
}

/// The delivery side's handle on one socket.
#[derive(Clone)]
pub struct ConnectionHandle {
    pub conn_id: Arc<str>,
    /// Who holds the socket (to announce it again after a NATS reconnect).
    pub identity: Arc<Identity>,
    pub outbound: mpsc::Sender<Outgoing>,
    pub evict: Arc<Notify>,
}

/// How long an event addressed to one socket waits for room in its queue.
const REPLAY_PATIENCE: Duration = Duration::from_secs(10);

impl ConnectionHandle {
    /// Queues without waiting; a full queue evicts the socket.
    fn offer(&self, outgoing: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outbound.try_send(outgoing) {
            self.evict_slow();
        }
    }

    /// Queues, waiting up to `patience` for room; a socket that makes none is evicted.
    async fn offer_patiently(&self, outgoing: Outgoing, patience: Duration) {
        match self.outbound.try_send(outgoing) {
            Err(mpsc::error::TrySendError::Full(outgoing)) => {
                if let Err(mpsc::error::SendTimeoutError::Timeout(_)) =
                    self.outbound.send_timeout(outgoing, patience).await
                {
                    self.evict_slow();
                }
            }
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn evict_slow(&self) {
        metrics::counter!("gateway_slow_client_evictions_total").increment(1);
        self.evict.notify_one();
    }
}

type Connections = Arc<Mutex<Vec<ConnectionHandle>>>;

struct UserEntry {
    connections: Connections,
    ready: watch::Receiver<bool>,
    delivery: JoinHandle<()>,
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    nats: async_nats::Client,
    presence: crate::presence::Presence,
    users: Mutex<HashMap<String, UserEntry>>,
    /// Unique per process start, so connection and frame ids never repeat across instances or
    /// restarts (they double as JetStream de-duplication ids).
    instance: String,
    next_connection: AtomicU64,
}

/// Keeps a socket registered; dropping it unregisters the socket (and the user's subscription
/// with their last socket).
pub struct Registration {
    registry: Registry,
    user_id: String,
    conn_id: Arc<str>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.unregister(&self.user_id, &self.conn_id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps half-updated in a way that matters
    // more than losing every socket, so carry on with the data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    pub fn new(nats: async_nats::Client) -> Registry {
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Registry {
            inner: Arc::new(Inner {
                presence: crate::presence::Presence::start(nats.clone(), instance.clone()),
                nats,
                users: Mutex::new(HashMap::new()),
                instance,
                next_connection: AtomicU64::new(1),
            }),
        }
    }

    /// States again every user who holds a socket here (after a NATS reconnect).
    pub fn restate_presence(&self) {
        let user_ids: Vec<String> = lock(&self.inner.users).keys().cloned().collect();
        self.inner.presence.resync(user_ids);
    }

    /// Every socket on this gateway, with who holds it.
    pub fn sockets(&self) -> Vec<(Arc<Identity>, Arc<str>)> {
        let users = lock(&self.inner.users);
        users
            .values()
            .flat_map(|entry| {
                lock(&entry.connections)
                    .iter()
                    .map(|handle| (handle.identity.clone(), handle.conn_id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How many sockets the user holds on this gateway.
    pub fn sockets_of(&self, user_id: &str) -> usize {
        lock(&self.inner.users)
            .get(user_id)
            .map_or(0, |entry| lock(&entry.connections).len())
    }

    pub fn next_conn_id(&self) -> Arc<str> {
        let number = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}-{number}", self.inner.instance))
    }

    /// Registers a socket and waits until the user's event subscription is live, so no event
    /// published after this returns is missed.
    pub async fn register(&self, identity: &Identity, handle: ConnectionHandle) -> Registration {
        let conn_id = handle.conn_id.clone();
        let mut ready = {
            let mut users = lock(&self.inner.users);
            match users.get(&identity.user_id) {
                Some(entry) => {
                    lock(&entry.connections).push(handle);
                    entry.ready.clone()
                }
                None => {
                    let connections: Connections = Arc::new(Mutex::new(vec![handle]));
                    let (ready_sender, ready) = watch::channel(false);
                    let delivery = tokio::spawn(deliver_events(
                        self.inner.nats.clone(),
                        identity.user_id.clone(),
                        connections.clone(),
                        ready_sender,
                    ));
                    users.insert(
                        identity.user_id.clone(),
                        UserEntry {
                            connections,
                            ready: ready.clone(),
                            delivery,
                        },
                    );
                    self.inner.presence.arrived(&identity.user_id);
                    ready
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|ready| *ready))
            .await
            .is_err()
        {
            tracing::warn!(user_id = %identity.user_id, "event subscription not confirmed in 5 s");
        }
        Registration {
            registry: self.clone(),
            user_id: identity.user_id.clone(),
            conn_id,
        }
    }

    fn unregister(&self, user_id: &str, conn_id: &str) {
        let mut users = lock(&self.inner.users);
        let now_empty = match users.get(user_id) {
            Some(entry) => {
                let mut connections = lock(&entry.connections);
                connections.retain(|connection| &*connection.conn_id != conn_id);
                connections.is_empty()
            }
            None => false,
        };
        if now_empty && let Some(entry) = users.remove(user_id) {
            // Dropping the subscription inside the task unsubscribes.
            entry.delivery.abort();
            self.inner.presence.left(user_id);
        }
    }

    /// Users with at least one socket here.
    pub fn users(&self) -> usize {
        lock(&self.inner.users).len()
    }
}

/// Forwards one user's events to their sockets until aborted.
async fn deliver_events(
    nats: async_nats::Client,
    user_id: String,
    connections: Connections,
    ready: watch::Sender<bool>,
) {
    let subject = shared::subjects::user_events(&user_id);
    let mut subscription = match nats.subscribe(subject).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::error!(%user_id, %error, "cannot subscribe to user events");
            return;
        }
    };
    // The server has the subscription once it answers a flush.
    if let Err(error) = nats.flush().await {
        tracing::warn!(%user_id, %error, "flush after subscribe failed");
    }
    let _ = ready.send(true);
    while let Some(message) = subscription.next().await {
        let target = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(headers::CONN_ID))
            .map(|value| value.as_str().to_owned());
        let close = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(headers::CLOSE))
            .is_some_and(|value| value.as_str() == "1");
        let Ok(frame) = Utf8Bytes::try_from(message.payload) else {
            tracing::warn!(%user_id, "dropped an event that is not UTF-8");
            continue;
        };
        deliver(
            &connections,
            target.as_deref(),
            close,
            frame,
            REPLAY_PATIENCE,
        )
        .await;
    }
}

/// Hands one event to the user's sockets: to all of them, or to the one named by `target`, which
/// may wait up to `patience` for room.
async fn deliver(
    connections: &Connections,
    target: Option<&str>,
    close: bool,
    frame: Utf8Bytes,
    patience: Duration,
) {
    if let Some(target) = target {
        let addressed = lock(connections)
            .iter()
            .find(|connection| &*connection.conn_id == target)
            .cloned();
        if let Some(connection) = addressed {
            connection
                .offer_patiently(Outgoing::Frame(frame), patience)
                .await;
            if close {
                connection.offer(Outgoing::Close);
            }
        }
        return;
    }
    for connection in lock(connections).iter() {
        connection.offer(Outgoing::Frame(frame.clone()));
        if close {
            connection.offer(Outgoing::Close);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(conn_id: &str, queue: usize) -> (ConnectionHandle, mpsc::Receiver<Outgoing>) {
        let (outbound, receiver) = mpsc::channel(queue);
        let identity = Identity {
            user_id: String::from("u1"),
            role: shared::auth::Role::Seeker,
            name: None,
        };
        let handle = ConnectionHandle {
            conn_id: Arc::from(conn_id),
            identity: Arc::new(identity),
            outbound,
            evict: Arc::new(Notify::new()),
        };
        (handle, receiver)
    }

    async fn evicted(handle: &ConnectionHandle) -> bool {
        tokio::time::timeout(Duration::from_millis(50), handle.evict.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_replay_to_one_socket_waits_for_room_instead_of_evicting_it() {
        let (handle, mut receiver) = socket("c1", 4);
        let connections: Connections = Arc::new(Mutex::new(vec![handle.clone()]));
        // The socket drains its queue slowly, as a phone does.
        let reader = tokio::spawn(async move {
            let mut received = 0;
            while let Some(Outgoing::Frame(_)) = receiver.recv().await {
                received += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            received
        });
        for _ in 0..40 {
            let frame = Utf8Bytes::from_static("{\"type\":\"chat_message\"}");
            deliver(
                &connections,
                Some("c1"),
                false,
                frame,
                Duration::from_secs(5),
            )
            .await;
        }
        assert!(!evicted(&handle).await, "a draining socket was evicted");
        lock(&connections).clear();
        drop(handle);
        assert_eq!(reader.await.expect("reader"), 40);
    }

    #[tokio::test]
    async fn a_socket_that_drains_nothing_is_evicted_for_replays_and_at_once_for_broadcasts() {
        let (handle, _receiver) = socket("c1", 2);
        let connections: Connections = Arc::new(Mutex::new(vec![handle.clone()]));
        let frame = || Utf8Bytes::from_static("{}");
        for _ in 0..2 {
            deliver(&connections, None, false, frame(), Duration::ZERO).await;
        }
        assert!(!evicted(&handle).await);
        deliver(&connections, None, false, frame(), Duration::from_secs(5)).await;
        assert!(evicted(&handle).await, "a broadcast to a full queue evicts");
        deliver(
            &connections,
            Some("c1"),
            false,
            frame(),
            Duration::from_millis(20),
        )
        .await;
        assert!(
            evicted(&handle).await,
            "a replay that never finds room evicts"
        );
    }
}
