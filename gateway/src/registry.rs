//! Who is connected to this gateway instance: each user's sockets, and the routing of
//! `user.<id>.events` to them. The gateway subscribes once to every user's events
//! (`user.*.events`) and routes each to the sockets of its user here (or, with a `conn-id` header,
//! to that one socket); events for users with no socket here are dropped. One subscription per
//! gateway instead of one per user keeps an idle socket cheap, and a user with sockets on two
//! gateways gets their events on both. The price: every gateway sees every user's events.
//!
//! Delivery never waits long on a socket: each socket has a bounded queue, and a socket whose queue
//! is full is evicted (its task closes it), so one slow phone cannot hold up anyone else. Events
//! addressed to one socket (a `resume` page, the re-sent messages of a connect) are replays the
//! socket asked for, often more at once than the queue holds: those wait up to
//! `REPLAY_PATIENCE` for room, in a task of their own, while the user's later events queue behind
//! them in order (a bounded backlog), and only a socket that drains nothing in that time is evicted.

use crate::socket_queue;
use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use shared::auth::Identity;
use shared::headers;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};

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
    pub outbound: socket_queue::Sender<Outgoing>,
    pub evict: Arc<Notify>,
}

/// How long an event addressed to one socket waits for room in its queue.
const REPLAY_PATIENCE: Duration = Duration::from_secs(10);
/// A user's events that may wait behind a replay; past it, the user's sockets are evicted (they
/// reconnect and resume).
const BACKLOG_LIMIT: usize = 1024;

impl ConnectionHandle {
    /// Queues without waiting; a full queue evicts the socket.
    fn offer(&self, outgoing: Outgoing) {
        if let Err(socket_queue::TrySendError::Full(_)) = self.outbound.try_send(outgoing) {
            self.evict_slow();
        }
    }

    fn evict_slow(&self) {
        metrics::counter!("gateway_slow_client_evictions_total").increment(1);
        self.evict.notify_one();
    }
}

/// One event for one user, as it came from NATS.
struct Routed {
    /// The one socket it is for (`conn-id`), or all of the user's.
    target: Option<String>,
    /// Close the socket(s) after it (`close: 1`).
    close: bool,
    frame: Utf8Bytes,
}

struct UserEntry {
    connections: Vec<ConnectionHandle>,
    /// While a replay waits for room in one of the user's sockets: the user's later events, in
    /// order.
    backlog: Option<VecDeque<Routed>>,
}

/// Each user's sockets on this gateway, and how an event reaches them.
struct Routes {
    users: Mutex<HashMap<String, UserEntry>>,
    patience: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave the maps half-updated in a way that matters
    // more than losing every socket, so carry on with the data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Routes {
    fn new(patience: Duration) -> Arc<Routes> {
        Arc::new(Routes {
            users: Mutex::new(HashMap::new()),
            patience,
        })
    }

    /// Hands one event to the user's sockets here, if any, without waiting: a replay that finds
    /// its socket's queue full waits in a task of its own, with the user's later events behind it.
    fn route(self: &Arc<Self>, user_id: &str, routed: Routed) {
        let mut users = lock(&self.users);
        let Some(entry) = users.get_mut(user_id) else {
            return;
        };
        if let Some(backlog) = &mut entry.backlog {
            if backlog.len() < BACKLOG_LIMIT {
                backlog.push_back(routed);
            } else {
                entry
                    .connections
                    .iter()
                    .for_each(ConnectionHandle::evict_slow);
            }
            return;
        }
        if let Some(waiting) = deliver_now(&entry.connections, routed) {
            entry.backlog = Some(VecDeque::new());
            tokio::spawn(self.clone().wait_then_drain(user_id.to_owned(), waiting));
        }
    }

    /// Delivers a replay that found no room, then what queued behind it, in order, each waiting
    /// up to the patience for room (they wait because of the replay the socket asked for); a
    /// socket that makes no room in that time is evicted.
    async fn wait_then_drain(self: Arc<Self>, user_id: String, first: Routed) {
        let mut next = first;
        loop {
            let connections: Vec<ConnectionHandle> = {
                let users = lock(&self.users);
                let Some(entry) = users.get(&user_id) else {
                    return;
                };
                entry
                    .connections
                    .iter()
                    .filter(|connection| {
                        next.target
                            .as_deref()
                            .is_none_or(|target| *connection.conn_id == *target)
                    })
                    .cloned()
                    .collect()
            };
            for connection in connections {
                let sent = connection
                    .outbound
                    .send_timeout(Outgoing::Frame(next.frame.clone()), self.patience)
                    .await;
                match sent {
                    Err(socket_queue::SendTimeoutError::Timeout(_)) => connection.evict_slow(),
                    Ok(()) if next.close => connection.offer(Outgoing::Close),
                    Ok(()) | Err(socket_queue::SendTimeoutError::Closed(_)) => {}
                }
            }
            let mut users = lock(&self.users);
            let Some(entry) = users.get_mut(&user_id) else {
                return;
            };
            match entry.backlog.as_mut().and_then(VecDeque::pop_front) {
                Some(queued) => next = queued,
                None => {
                    entry.backlog = None;
                    return;
                }
            }
        }
    }
}

/// Queues an event on its socket(s) without waiting; the replay it could not queue, if any.
fn deliver_now(connections: &[ConnectionHandle], routed: Routed) -> Option<Routed> {
    let Routed {
        target,
        close,
        frame,
    } = routed;
    if let Some(target) = target {
        let connection = connections
            .iter()
            .find(|connection| *connection.conn_id == *target)?;
        return match connection.outbound.try_send(Outgoing::Frame(frame)) {
            Err(socket_queue::TrySendError::Full(Outgoing::Frame(frame))) => Some(Routed {
                target: Some(target),
                close,
                frame,
            }),
            Ok(()) if close => {
                connection.offer(Outgoing::Close);
                None
            }
            _ => None,
        };
    }
    for connection in connections {
        connection.offer(Outgoing::Frame(frame.clone()));
        if close {
            connection.offer(Outgoing::Close);
        }
    }
    None
}

#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    presence: crate::presence::Presence,
    routes: Arc<Routes>,
    /// True once the gateway's subscription to every user's events is live.
    ready: watch::Receiver<bool>,
    /// Unique per process start, so connection and frame ids never repeat across instances or
    /// restarts (they double as JetStream de-duplication ids).
    instance: String,
    next_connection: AtomicU64,
    /// Sockets each user holds or is opening here: the per-user cap is counted on these, taken
    /// before an upgrade answers, so parallel upgrades cannot all pass a check made before any
    /// of them registered.
    slots: Mutex<HashMap<String, usize>>,
}

/// One of a user's places under the socket cap, held from before the upgrade answers until the
/// socket closes; dropping it frees the place.
pub struct SocketSlot {
    registry: Registry,
    user_id: String,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut slots = lock(&self.registry.inner.slots);
        if let Some(count) = slots.get_mut(&self.user_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                slots.remove(&self.user_id);
            }
        }
    }
}

/// Keeps a socket registered; dropping it unregisters the socket.
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

impl Registry {
    /// Starts routing every user's events (one subscription) and the presence facts.
    pub fn new(nats: async_nats::Client) -> Registry {
        let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let routes = Routes::new(REPLAY_PATIENCE);
        let (ready_sender, ready) = watch::channel(false);
        tokio::spawn(route_events(nats.clone(), routes.clone(), ready_sender));
        Registry {
            inner: Arc::new(Inner {
                presence: crate::presence::Presence::start(nats, instance.clone()),
                routes,
                ready,
                instance,
                next_connection: AtomicU64::new(1),
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// States again every user who holds a socket here (after a NATS reconnect).
    pub fn restate_presence(&self) {
        let user_ids: Vec<String> = lock(&self.inner.routes.users).keys().cloned().collect();
        self.inner.presence.resync(user_ids);
    }

    /// Every socket on this gateway, with who holds it.
    pub fn sockets(&self) -> Vec<(Arc<Identity>, Arc<str>)> {
        let users = lock(&self.inner.routes.users);
        users
            .values()
            .flat_map(|entry| {
                entry
                    .connections
                    .iter()
                    .map(|handle| (handle.identity.clone(), handle.conn_id.clone()))
            })
            .collect()
    }

    /// How many sockets the user holds on this gateway.
    pub fn sockets_of(&self, user_id: &str) -> usize {
        lock(&self.inner.routes.users)
            .get(user_id)
            .map_or(0, |entry| entry.connections.len())
    }

    /// Takes one of the user's `max` places for a socket, or `None` when all are taken.
    pub fn take_socket_slot(&self, user_id: &str, max: usize) -> Option<SocketSlot> {
        let mut slots = lock(&self.inner.slots);
        let count = slots.entry(user_id.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SocketSlot {
            registry: self.clone(),
            user_id: user_id.to_owned(),
        })
    }

    pub fn next_conn_id(&self) -> Arc<str> {
        let number = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}-{number}", self.inner.instance))
    }

    /// Registers a socket; events published after this returns reach it (it waits, at start-up
    /// only, for the gateway's subscription to be live).
    pub async fn register(&self, identity: &Identity, handle: ConnectionHandle) -> Registration {
        let conn_id = handle.conn_id.clone();
        let first = {
            let mut users = lock(&self.inner.routes.users);
            let entry = users
                .entry(identity.user_id.clone())
                .or_insert_with(|| UserEntry {
                    connections: Vec::new(),
                    backlog: None,
                });
            entry.connections.push(handle);
            entry.connections.len() == 1
        };
        if first {
            self.inner.presence.arrived(&identity.user_id);
        }
        let mut ready = self.inner.ready.clone();
        if tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|ready| *ready))
            .await
            .is_err()
        {
            tracing::warn!("the subscription to user events is not confirmed after 5 s");
        }
        Registration {
            registry: self.clone(),
            user_id: identity.user_id.clone(),
            conn_id,
        }
    }

    fn unregister(&self, user_id: &str, conn_id: &str) {
        let mut users = lock(&self.inner.routes.users);
        let now_empty = match users.get_mut(user_id) {
            Some(entry) => {
                entry
                    .connections
                    .retain(|connection| &*connection.conn_id != conn_id);
                entry.connections.is_empty()
            }
            None => false,
        };
        if now_empty {
            users.remove(user_id);
            self.inner.presence.left(user_id);
        }
    }

    /// Users with at least one socket here.
    pub fn users(&self) -> usize {
        lock(&self.inner.routes.users).len()
    }
}

/// Routes every user's events to the sockets here, for the life of the process (async-nats
/// subscribes again by itself after a reconnect).
async fn route_events(nats: async_nats::Client, routes: Arc<Routes>, ready: watch::Sender<bool>) {
    let mut subscription = loop {
        match nats.subscribe(shared::subjects::ALL_USER_EVENTS).await {
            Ok(subscription) => break subscription,
            Err(error) => {
                tracing::error!(%error, "cannot subscribe to user events; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    // The server has the subscription once it answers a flush.
    if let Err(error) = nats.flush().await {
        tracing::warn!(%error, "flush after subscribe failed");
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
            tracing::warn!(subject = %message.subject, "dropped an event that is not UTF-8");
            continue;
        };
        let Some(user_id) = shared::subjects::user_of_events(message.subject.as_str()) else {
            continue;
        };
        routes.route(
            user_id,
            Routed {
                target,
                close,
                frame,
            },
        );
    }
    tracing::error!("the subscription to user events ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(conn_id: &str, queue: usize) -> (ConnectionHandle, socket_queue::Receiver<Outgoing>) {
        let (outbound, receiver) = socket_queue::channel(queue);
        let identity = Identity {
            user_id: String::from("u1"),
            role: shared::auth::Role::Seeker,
            name: None,
            expires_at: i64::MAX,
        };
        let handle = ConnectionHandle {
            conn_id: Arc::from(conn_id),
            identity: Arc::new(identity),
            outbound,
            evict: Arc::new(Notify::new()),
        };
        (handle, receiver)
    }

    fn routes_with(patience: Duration, users: Vec<(&str, ConnectionHandle)>) -> Arc<Routes> {
        let routes = Routes::new(patience);
        for (user_id, handle) in users {
            lock(&routes.users)
                .entry(user_id.to_owned())
                .or_insert_with(|| UserEntry {
                    connections: Vec::new(),
                    backlog: None,
                })
                .connections
                .push(handle);
        }
        routes
    }

    fn event(target: Option<&str>, text: String) -> Routed {
        Routed {
            target: target.map(str::to_owned),
            close: false,
            frame: Utf8Bytes::from(text),
        }
    }

    async fn evicted(handle: &ConnectionHandle) -> bool {
        tokio::time::timeout(Duration::from_millis(50), handle.evict.notified())
            .await
            .is_ok()
    }

    /// Reads a socket's queue slowly, as a phone does; the frames it got, in order.
    fn slow_reader(
        mut receiver: socket_queue::Receiver<Outgoing>,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        tokio::spawn(async move {
            let mut received = Vec::new();
            while let Some(Outgoing::Frame(frame)) = receiver.recv().await {
                received.push(frame.as_str().to_owned());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            received
        })
    }

    #[tokio::test]
    async fn a_replay_to_one_socket_waits_for_room_and_later_events_keep_their_order() {
        let (handle, receiver) = socket("c1", 4);
        let routes = routes_with(Duration::from_secs(5), vec![("u1", handle.clone())]);
        let reader = slow_reader(receiver);
        for index in 0..40 {
            routes.route("u1", event(Some("c1"), format!("replay {index}")));
        }
        for index in 0..3 {
            routes.route("u1", event(None, format!("live {index}")));
        }
        // Wait for the backlog to drain, then let the reader finish.
        tokio::time::timeout(Duration::from_secs(5), async {
            while lock(&routes.users)["u1"].backlog.is_some() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the backlog drains");
        assert!(!evicted(&handle).await, "a draining socket was evicted");
        lock(&routes.users).clear();
        drop(handle);
        let expected: Vec<String> = (0..40)
            .map(|index| format!("replay {index}"))
            .chain((0..3).map(|index| format!("live {index}")))
            .collect();
        assert_eq!(reader.await.expect("reader"), expected);
    }

    #[tokio::test]
    async fn a_replay_waiting_for_one_user_holds_up_no_other_user() {
        let (slow, _never_read) = socket("c1", 1);
        let (other, mut other_receiver) = socket("c2", 4);
        let routes = routes_with(
            Duration::from_secs(5),
            vec![("u1", slow.clone()), ("u2", other)],
        );
        for index in 0..3 {
            routes.route("u1", event(Some("c1"), format!("replay {index}")));
        }
        routes.route("u2", event(None, String::from("for u2")));
        let received = tokio::time::timeout(Duration::from_millis(200), other_receiver.recv())
            .await
            .expect("u2's event is not held up");
        assert!(matches!(received, Some(Outgoing::Frame(frame)) if frame.as_str() == "for u2"));
    }

    #[tokio::test]
    async fn a_socket_that_drains_nothing_is_evicted_for_replays_and_at_once_for_broadcasts() {
        let (handle, _receiver) = socket("c1", 2);
        let routes = routes_with(Duration::from_millis(20), vec![("u1", handle.clone())]);
        for index in 0..2 {
            routes.route("u1", event(None, format!("{index}")));
        }
        assert!(!evicted(&handle).await);
        routes.route("u1", event(None, String::from("one too many")));
        assert!(evicted(&handle).await, "a broadcast to a full queue evicts");
        routes.route("u1", event(Some("c1"), String::from("replay")));
        assert!(
            evicted(&handle).await,
            "a replay that never finds room evicts"
        );
    }

    #[tokio::test]
    async fn a_backlog_that_outgrows_its_limit_evicts_the_users_sockets() {
        let (handle, _never_read) = socket("c1", 1);
        let routes = routes_with(Duration::from_secs(5), vec![("u1", handle.clone())]);
        // The first replay fills the queue, the second waits, the rest queue behind it up to
        // the limit.
        for index in 0..BACKLOG_LIMIT + 2 {
            routes.route("u1", event(Some("c1"), format!("replay {index}")));
        }
        assert!(
            !evicted(&handle).await,
            "within the limit: waiting, not evicted"
        );
        routes.route("u1", event(None, String::from("one too many")));
        assert!(
            evicted(&handle).await,
            "past the limit the socket is evicted"
        );
    }

    #[tokio::test]
    async fn events_of_users_with_no_socket_here_are_dropped() {
        let (handle, mut receiver) = socket("c1", 4);
        let routes = routes_with(Duration::from_secs(1), vec![("u1", handle)]);
        routes.route("stranger", event(None, String::from("not yours")));
        routes.route("u1", event(Some("c9"), String::from("another socket's")));
        routes.route("u1", event(None, String::from("yours")));
        assert!(
            matches!(receiver.recv().await, Some(Outgoing::Frame(frame)) if frame.as_str() == "yours")
        );
    }
}
