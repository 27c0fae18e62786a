//! `typing_indicator` (core NATS, `chat` queue group). The state lives in the `typing` KV bucket
//! under `<session_id>.<role>`; each `is_typing: true` writes it again. The instance that wrote a
//! revision checks it `TYPING_TTL_SECS` later: if nobody refreshed or cleared it meanwhile, it
//! clears it and tells the other party `is_typing: false`. A chat message or `is_typing: false`
//! clears it at once. The typist gets no echo. Entries also carry a server-side TTL a little
//! longer than the check, so state never lingers if an instance dies.

use super::Chat;
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

/// Who is in a live session, cached so typing frames do not read the database each time.
#[derive(Clone)]
struct Participants {
    seeker_id: String,
    provider_id: String,
}

pub struct Typing {
    nats: async_nats::Client,
    context: jetstream::Context,
    store: kv::Store,
    pool: PgPool,
    ttl: Duration,
    live_sessions: Mutex<HashMap<Uuid, Participants>>,
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
    pub fn clear_in_background(self: &Arc<Self>, mut clears: Vec<(Uuid, Role, String)>) {
        clears.sort_by(|a, b| (a.0, a.1.as_str()).cmp(&(b.0, b.1.as_str())));
        clears.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        clears.retain(|(session_id, role, _)| self.may_be_set(&key(*session_id, *role)));
        if clears.is_empty() {
            return;
        }
        let typing = self.clone();
        tokio::spawn(async move {
            for (session_id, role, other_user_id) in clears {
                if typing.clear(session_id, role).await {
                    let event = Event::TypingIndicator {
                        session_id,
                        user_type: role,
                        is_typing: false,
                        timestamp: shared::time::now(),
                    };
                    publish(
                        &typing.nats,
                        &[Delivery::to_user(&other_user_id, &event)],
                        "",
                    )
                    .await;
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
        Ok(ack.sequence)
    }

    /// Clears the indicator if `revision` is still the latest; true when it did.
    async fn expire(&self, session_id: Uuid, role: Role, revision: u64) -> bool {
        let key = key(session_id, role);
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

    /// The session's participants and whether it is live (live sessions are cached).
    async fn participants(
        &self,
        session_id: Uuid,
    ) -> Result<Option<(Participants, bool)>, sqlx::Error> {
        if let Some(found) = self.cached(session_id) {
            return Ok(Some((found, true)));
        }
        let mut connection = self.pool.acquire().await?;
        let Some(row) = crate::session::load(&mut connection, session_id).await? else {
            return Ok(None);
        };
        let participants = Participants {
            seeker_id: row.seeker_id.clone(),
            provider_id: row.provider_id.clone(),
        };
        let live = row.state().is_live();
        if live && let Ok(mut cache) = self.live_sessions.lock() {
            cache.insert(session_id, participants.clone());
        }
        Ok(Some((participants, live)))
    }

    fn cached(&self, session_id: Uuid) -> Option<Participants> {
        self.live_sessions.lock().ok()?.get(&session_id).cloned()
    }

    fn forget(&self, session_id: &Uuid) {
        if let Ok(mut cache) = self.live_sessions.lock() {
            cache.remove(session_id);
        }
    }
}

pub async fn serve(nats: async_nats::Client, chat: Arc<Chat>) -> anyhow::Result<()> {
    let mut frames = nats
        .queue_subscribe(
            subjects::session_wildcard(Topic::Typing),
            queue::CHAT.to_owned(),
        )
        .await?;
    // Every instance drops its cache entry when a session ends (no queue group).
    let mut ended = nats.subscribe(subjects::SESSIONS_ENDED).await?;
    loop {
        tokio::select! {
            Some(frame) = frames.next() => {
                let (nats, chat) = (nats.clone(), chat.clone());
                tokio::spawn(async move { handle(&nats, &chat, frame).await });
            }
            Some(notice) = ended.next() => {
                if let Some(session_id) = subjects::session_id_of(notice.subject.as_str()) {
                    chat.typing.forget(&session_id);
                }
            }
            else => return Ok(()),
        }
    }
}

async fn handle(nats: &async_nats::Client, chat: &Chat, message: async_nats::Message) {
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
        Ok(participants) => participants,
        Err(error) => {
            tracing::warn!(%error, "cannot check a typing frame's session");
            return;
        }
    };
    let Some((participants, live)) = participants else {
        publish(nats, &[refuse(errors::SESSION_NOT_FOUND)], "").await;
        return;
    };
    let (own_id, other_id) = match role {
        Role::Seeker => (&participants.seeker_id, &participants.provider_id),
        Role::Provider => (&participants.provider_id, &participants.seeker_id),
    };
    if *own_id != user_id {
        publish(nats, &[refuse(errors::SESSION_NOT_FOUND)], "").await;
        return;
    }
    if !live {
        publish(nats, &[refuse(errors::SESSION_ENDED)], "").await;
        return;
    }
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
        Delivery::to_user(other_id, &event)
    };
    if !is_typing {
        chat.typing.clear(session_id, role).await;
        publish(nats, &[indicator(false)], "").await;
        return;
    }
    let revision = match chat.typing.set(session_id, role).await {
        Ok(revision) => revision,
        Err(error) => {
            tracing::warn!(%error, "cannot store a typing indicator");
            return;
        }
    };
    publish(nats, &[indicator(true)], "").await;
    tokio::time::sleep(chat.typing.ttl).await;
    if chat.typing.expire(session_id, role, revision).await {
        publish(nats, &[indicator(false)], "").await;
    }
}
