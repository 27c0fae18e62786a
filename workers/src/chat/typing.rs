//! `typing_indicator` (core NATS, `chat` queue group). The state lives in the `typing` KV bucket
//! under `<session_id>.<role>`; each `is_typing: true` writes it again. The instance that wrote a
//! revision checks it `TYPING_TTL_SECS` later: if nobody refreshed or cleared it meanwhile, it
//! clears it and tells the other party `is_typing: false`. A chat message or `is_typing: false`
//! clears it at once. The typist gets no echo. Entries also carry a server-side TTL a little
//! longer than the check, so state never lingers if an instance dies.
//!
//! The work per frame is bounded: at most `IN_HAND` frames are handled at once (the rest wait in
//! the subscription, and core NATS drops what overflows it: typing is best effort), the expiry
//! checks wait in one queue served by one task (the TTL is the same for all, so first in is
//! first due), and unknown or ended sessions are remembered briefly (`closed_sessions`) so their
//! frames cost no query.

use super::Chat;
use crate::closed_sessions::{Closed, ClosedSessions};
use crate::outbox::{Delivery, publish};
use crate::runtime::Sender;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde_json::Value;
use shared::auth::Role;
use shared::frames::{ClientFrame, Event, errors};
use shared::nats::TYPING_BUCKET;
use shared::subjects::{self, Topic, queue};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Typing frames handled at once by one instance.
const IN_HAND: usize = 64;
/// Expiry checks waiting at once; beyond it, the indicator's server-side TTL clears it (without
/// telling the other party at once).
const PENDING_EXPIRIES: usize = 65_536;

/// An indicator to check once its TTL passed.
struct PendingExpiry {
    due: tokio::time::Instant,
    session_id: Uuid,
    role: Role,
    revision: u64,
    others: Vec<String>,
}

/// Who is in a session whose chat is open, cached so typing frames do not read the database each
/// time (dropped when the session ends or its participants change).
#[derive(Clone)]
struct Participants {
    seeker_id: String,
    provider_id: String,
    mediator_id: Option<String>,
}

impl Participants {
    fn user_of(&self, role: Role) -> Option<&str> {
        match role {
            Role::Seeker => Some(&self.seeker_id),
            Role::Provider => Some(&self.provider_id),
            Role::Mediator => self.mediator_id.as_deref(),
        }
    }

    fn others(&self, role: Role) -> Vec<String> {
        [Role::Seeker, Role::Provider, Role::Mediator]
            .into_iter()
            .filter(|other| *other != role)
            .filter_map(|other| self.user_of(other).map(str::to_owned))
            .collect()
    }
}

pub struct Typing {
    nats: async_nats::Client,
    context: jetstream::Context,
    store: kv::Store,
    pool: PgPool,
    ttl: Duration,
    live_sessions: Mutex<HashMap<Uuid, Participants>>,
    closed: Mutex<ClosedSessions>,
    /// The latest revision this instance wrote per key: an expiry check for an older one needs
    /// no bucket read.
    written: Mutex<HashMap<String, u64>>,
    /// The keys set in the bucket right now, kept by a watch on it, so that the chat messages of a
    /// batch clear only indicators that exist instead of reading the bucket once per message.
    typists: Arc<Mutex<HashSet<String>>>,
    /// Whether the watch runs; without it every clear reads the bucket.
    watching: Arc<AtomicBool>,
}

fn key(session_id: Uuid, role: Role) -> String {
    format!("{session_id}.{}", role.as_str())
}

impl Typing {
    pub async fn new(
        nats: &async_nats::Client,
        pool: PgPool,
        ttl: Duration,
    ) -> anyhow::Result<Arc<Typing>> {
        let context = jetstream::new(nats.clone());
        let store = context
            .get_key_value(TYPING_BUCKET)
            .await
            .map_err(|error| anyhow::anyhow!("KV bucket {TYPING_BUCKET}: {error}"))?;
        let typists = Arc::new(Mutex::new(HashSet::new()));
        let watching = Arc::new(AtomicBool::new(false));
        match store.watch_all().await {
            Ok(mut watch) => {
                watching.store(true, Ordering::Relaxed);
                let (typists, watching) = (typists.clone(), watching.clone());
                tokio::spawn(async move {
                    while let Some(entry) = watch.next().await {
                        let Ok(entry) = entry else { continue };
                        if let Ok(mut typists) = typists.lock() {
                            if entry.operation == kv::Operation::Put {
                                typists.insert(entry.key);
                            } else {
                                typists.remove(&entry.key);
                            }
                        }
                    }
                    tracing::warn!("typing watch ended; clears now read the bucket");
                    watching.store(false, Ordering::Relaxed);
                });
            }
            Err(error) => tracing::warn!(%error, "cannot watch the typing bucket"),
        }
        Ok(Arc::new(Typing {
            nats: nats.clone(),
            context,
            store,
            pool,
            ttl,
            live_sessions: Mutex::new(HashMap::new()),
            closed: Mutex::new(ClosedSessions::default()),
            written: Mutex::new(HashMap::new()),
            typists,
            watching,
        }))
    }

    /// Whether `key` may be set (always, when the watch does not run).
    fn may_be_set(&self, key: &str) -> bool {
        !self.watching.load(Ordering::Relaxed)
            || self
                .typists
                .lock()
                .map(|typists| typists.contains(key))
                .unwrap_or(true)
    }

    /// Clears `role`'s indicator in the session; true when it was set (so the other party must
    /// hear `is_typing: false`).
    pub async fn clear(&self, session_id: Uuid, role: Role) -> bool {
        let key = key(session_id, role);
        if !self.may_be_set(&key) {
            return false;
        }
        match self.store.entry(key.as_str()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => self
                .store
                .delete_expect_revision(key.as_str(), Some(entry.revision))
                .await
                .is_ok(),
            _ => false,
        }
    }

    /// Clears the indicators of a batch's senders without holding up the batch, and tells each
    /// other party whose typist was shown typing. Only indicators that exist cost a bucket call.
    pub fn clear_in_background(self: &Arc<Self>, mut clears: Vec<(Uuid, Role, Vec<String>)>) {
        clears.sort_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
        clears.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        clears.retain(|(session_id, role, _)| self.may_be_set(&key(*session_id, *role)));
        if clears.is_empty() {
            return;
        }
        let typing = self.clone();
        tokio::spawn(async move {
            for (session_id, role, others) in clears {
                if typing.clear(session_id, role).await {
                    let event = Event::TypingIndicator {
                        session_id,
                        user_type: role,
                        is_typing: false,
                        timestamp: shared::time::now(),
                    };
                    let deliveries: Vec<Delivery> = others
                        .iter()
                        .map(|other| Delivery::to_user(other, &event))
                        .collect();
                    publish(&typing.nats, &deliveries, "").await;
                }
            }
        });
    }

    /// Writes the indicator with a server-side TTL; returns its revision.
    async fn set(&self, session_id: Uuid, role: Role) -> anyhow::Result<u64> {
        let mut nats_headers = async_nats::HeaderMap::new();
        let backstop = self.ttl.as_secs() + 5;
        nats_headers.insert("Nats-TTL", format!("{backstop}s").as_str());
        let key = key(session_id, role);
        if let Ok(mut typists) = self.typists.lock() {
            typists.insert(key.clone());
        }
        let subject = format!("$KV.{TYPING_BUCKET}.{key}");
        let ack = self
            .context
            .publish_with_headers(subject, nats_headers, bytes::Bytes::from_static(b"1"))
            .await?
            .await?;
        if let Ok(mut written) = self.written.lock() {
            written.insert(key, ack.sequence);
        }
        Ok(ack.sequence)
    }

    /// Clears the indicator if `revision` is still the latest; true when it did.
    async fn expire(&self, session_id: Uuid, role: Role, revision: u64) -> bool {
        let key = key(session_id, role);
        if let Ok(mut written) = self.written.lock() {
            match written.get(&key) {
                // This instance wrote a newer one since: its own check will come.
                Some(latest) if *latest > revision => return false,
                _ => {
                    written.remove(&key);
                }
            }
        }
        match self.store.entry(key.as_str()).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && entry.revision == revision =>
            {
                self.store
                    .delete_expect_revision(key.as_str(), Some(revision))
                    .await
                    .is_ok()
            }
            _ => false,
        }
    }

    /// The participants of a live session, or why its frames are refused (both remembered, so
    /// repeated frames cost no query).
    async fn participants(&self, session_id: Uuid) -> Result<Lookup, sqlx::Error> {
        if let Some(found) = self.cached(session_id) {
            return Ok(found);
        }
        let mut connection = self.pool.acquire().await?;
        let Some(row) = crate::session::load(&mut connection, session_id).await? else {
            self.remember_closed(session_id, Closed::Unknown);
            return Ok(Lookup::Closed(Closed::Unknown));
        };
        let participants = Participants {
            seeker_id: row.seeker_id.clone(),
            provider_id: row.provider_id.clone(),
            mediator_id: row.mediator_id.clone(),
        };
        if !row.chat_open() {
            let closed = Closed::Ended {
                seeker_id: participants.seeker_id,
                provider_id: participants.provider_id,
            };
            self.remember_closed(session_id, closed.clone());
            return Ok(Lookup::Closed(closed));
        }
        if let Ok(mut cache) = self.live_sessions.lock() {
            cache.insert(session_id, participants.clone());
        }
        Ok(Lookup::Live(participants))
    }

    fn cached(&self, session_id: Uuid) -> Option<Lookup> {
        if let Some(live) = self.live_sessions.lock().ok()?.get(&session_id) {
            return Some(Lookup::Live(live.clone()));
        }
        let closed = self.closed.lock().ok()?;
        closed.get(&session_id).cloned().map(Lookup::Closed)
    }

    fn remember_closed(&self, session_id: Uuid, closed: Closed) {
        if let Ok(mut remembered) = self.closed.lock() {
            remembered.remember(session_id, closed);
        }
    }

    /// The session's participants changed (a mediator joined or left): read them again.
    fn reload(&self, session_id: &Uuid) {
        if let Ok(mut cache) = self.live_sessions.lock() {
            cache.remove(session_id);
        }
        if let Ok(mut closed) = self.closed.lock() {
            closed.forget(session_id);
        }
    }

    /// The session ended: its frames are refused from now on (unless a dispute keeps its chat
    /// open, which the next lookup finds).
    fn forget(&self, session_id: &Uuid) {
        let live = self
            .live_sessions
            .lock()
            .ok()
            .and_then(|mut cache| cache.remove(session_id));
        if let Some(participants) = live {
            self.remember_closed(
                *session_id,
                Closed::Ended {
                    seeker_id: participants.seeker_id,
                    provider_id: participants.provider_id,
                },
            );
        }
    }
}

enum Lookup {
    Live(Participants),
    Closed(Closed),
}

pub async fn serve(nats: async_nats::Client, chat: Arc<Chat>) -> anyhow::Result<()> {
    let mut frames = nats
        .queue_subscribe(
            subjects::session_wildcard(Topic::Typing),
            queue::CHAT.to_owned(),
        )
        .await?;
    // Every instance drops its cache entry when a session ends or its participants change (no
    // queue group).
    let mut ended = nats.subscribe(subjects::SESSIONS_ENDED).await?;
    let mut changed = nats.subscribe(subjects::SESSIONS_CHANGED).await?;
    let in_hand = Arc::new(tokio::sync::Semaphore::new(IN_HAND));
    let (expiries, pending) = tokio::sync::mpsc::channel(PENDING_EXPIRIES);
    tokio::spawn(expire_when_due(nats.clone(), chat.clone(), pending));
    loop {
        tokio::select! {
            Some(frame) = frames.next() => {
                let Ok(permit) = in_hand.clone().acquire_owned().await else { return Ok(()) };
                let (nats, chat, expiries) = (nats.clone(), chat.clone(), expiries.clone());
                tokio::spawn(async move {
                    handle(&nats, &chat, &expiries, frame).await;
                    drop(permit);
                });
            }
            Some(notice) = ended.next() => {
                if let Some(session_id) = subjects::session_id_of(notice.subject.as_str()) {
                    chat.typing.forget(&session_id);
                }
            }
            Some(notice) = changed.next() => {
                if let Some(session_id) = subjects::session_id_of(notice.subject.as_str()) {
                    chat.typing.reload(&session_id);
                }
            }
            else => return Ok(()),
        }
    }
}

/// Checks each written indicator once its TTL passed: one task, in order of writing (which is the
/// order they fall due).
async fn expire_when_due(
    nats: async_nats::Client,
    chat: Arc<Chat>,
    mut pending: tokio::sync::mpsc::Receiver<PendingExpiry>,
) {
    while let Some(expiry) = pending.recv().await {
        tokio::time::sleep_until(expiry.due).await;
        if chat
            .typing
            .expire(expiry.session_id, expiry.role, expiry.revision)
            .await
        {
            let event = Event::TypingIndicator {
                session_id: expiry.session_id,
                user_type: expiry.role,
                is_typing: false,
                timestamp: shared::time::now(),
            };
            let deliveries: Vec<Delivery> = expiry
                .others
                .iter()
                .map(|other| Delivery::to_user(other, &event))
                .collect();
            publish(&nats, &deliveries, "").await;
        }
    }
}

async fn handle(
    nats: &async_nats::Client,
    chat: &Chat,
    expiries: &tokio::sync::mpsc::Sender<PendingExpiry>,
    message: async_nats::Message,
) {
    let (
        Some(Sender {
            user_id,
            role,
            conn_id,
        }),
        Some(session_id),
    ) = (
        Sender::from_headers(message.headers.as_ref()),
        subjects::session_id_of(message.subject.as_str()),
    )
    else {
        return;
    };
    let refuse = |error: &str| {
        let event = Event::error(error, Some("typing_indicator"), Some(session_id));
        Delivery::to_socket(&user_id, &conn_id, &event)
    };
    let participants = match chat.typing.participants(session_id).await {
        Ok(Lookup::Live(participants)) => participants,
        Ok(Lookup::Closed(closed)) => {
            publish(nats, &[refuse(closed.refusal_for(&user_id))], "").await;
            return;
        }
        Err(error) => {
            tracing::warn!(%error, "cannot check a typing frame's session");
            return;
        }
    };
    if participants.user_of(role) != Some(user_id.as_str()) {
        publish(nats, &[refuse(errors::SESSION_NOT_FOUND)], "").await;
        return;
    }
    let others = participants.others(role);
    let is_typing = match serde_json::from_slice::<ClientFrame>(&message.payload) {
        Ok(ClientFrame::TypingIndicator {
            is_typing: Some(Value::Bool(is_typing)),
            ..
        }) => is_typing,
        _ => {
            publish(nats, &[refuse("is_typing must be true or false")], "").await;
            return;
        }
    };
    let indicator = |is_typing: bool| {
        let event = Event::TypingIndicator {
            session_id,
            user_type: role,
            is_typing,
            timestamp: shared::time::now(),
        };
        others
            .iter()
            .map(|other| Delivery::to_user(other, &event))
            .collect::<Vec<_>>()
    };
    if !is_typing {
        chat.typing.clear(session_id, role).await;
        publish(nats, &indicator(false), "").await;
        return;
    }
    let revision = match chat.typing.set(session_id, role).await {
        Ok(revision) => revision,
        Err(error) => {
            tracing::warn!(%error, "cannot store a typing indicator");
            return;
        }
    };
    publish(nats, &indicator(true), "").await;
    let expiry = PendingExpiry {
        due: tokio::time::Instant::now() + chat.typing.ttl,
        session_id,
        role,
        revision,
        others,
    };
    if expiries.try_send(expiry).is_err() {
        tracing::warn!("typing expiry queue full; the indicator's server-side TTL will clear it");
    }
}
