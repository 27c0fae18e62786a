//! Facts about this gateway's sockets for presence (contract section 8), in the `presence` KV
//! bucket: `socket.<user_id>.<gateway>` exists while the user holds at least one socket here, and
//! `gateway.<gateway>` is this gateway's heartbeat (a per-key TTL of `HEARTBEAT_TTL`, renewed
//! every `HEARTBEAT`). The gateway states nothing else: who is online for whom, the grace period
//! against flapping and the `presence` events are the lifecycle worker's business (it also drops
//! the socket keys of a gateway whose heartbeat expired, so a dead gateway's users go offline).
//!
//! Changes go out in the order they happened, through one task, as plain publishes on the
//! bucket's subjects: no socket waits for them.

use async_nats::HeaderMap;
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often the heartbeat is renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A heartbeat not renewed for this long expires: the gateway counts as dead.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(6);

enum Change {
    Arrived(String),
    Left(String),
    /// Everything again (after a NATS reconnect, the bucket may have lost them).
    Resync(Vec<String>),
}

#[derive(Clone)]
pub struct Presence {
    changes: mpsc::UnboundedSender<Change>,
}

impl Presence {
    /// Starts the publishing task and the heartbeat of gateway `instance`.
    pub fn start(nats: async_nats::Client, instance: String) -> Presence {
        let (changes, receiver) = mpsc::unbounded_channel();
        tokio::spawn(publish_changes(nats, instance, receiver));
        Presence { changes }
    }

    /// The user's first socket on this gateway opened.
    pub fn arrived(&self, user_id: &str) {
        let _ = self.changes.send(Change::Arrived(user_id.to_owned()));
    }

    /// The user's last socket on this gateway closed.
    pub fn left(&self, user_id: &str) {
        let _ = self.changes.send(Change::Left(user_id.to_owned()));
    }

    pub fn resync(&self, user_ids: Vec<String>) {
        let _ = self.changes.send(Change::Resync(user_ids));
    }
}

fn socket_subject(user_id: &str, instance: &str) -> String {
    format!(
        "$KV.{}.socket.{user_id}.{instance}",
        shared::nats::PRESENCE_BUCKET
    )
}

async fn publish_changes(
    nats: async_nats::Client,
    instance: String,
    mut changes: mpsc::UnboundedReceiver<Change>,
) {
    let heartbeat_subject = format!("$KV.{}.gateway.{instance}", shared::nats::PRESENCE_BUCKET);
    let mut heartbeat_headers = HeaderMap::new();
    heartbeat_headers.insert("Nats-TTL", format!("{}s", HEARTBEAT_TTL.as_secs()).as_str());
    let mut deleted = HeaderMap::new();
    deleted.insert("KV-Operation", "DEL");
    let mut heartbeats = tokio::time::interval(HEARTBEAT);
    loop {
        let result = tokio::select! {
            _ = heartbeats.tick() => {
                nats.publish_with_headers(heartbeat_subject.clone(), heartbeat_headers.clone(), Bytes::new()).await
            }
            change = changes.recv() => match change {
                Some(Change::Arrived(user_id)) => {
                    nats.publish(socket_subject(&user_id, &instance), Bytes::from_static(b"1")).await
                }
                Some(Change::Left(user_id)) => {
                    nats.publish_with_headers(socket_subject(&user_id, &instance), deleted.clone(), Bytes::new()).await
                }
                Some(Change::Resync(user_ids)) => {
                    let mut result = Ok(());
                    for user_id in user_ids {
                        result = nats.publish(socket_subject(&user_id, &instance), Bytes::from_static(b"1")).await;
                    }
                    result
                }
                None => return,
            },
        };
        if let Err(error) = result {
            tracing::warn!(%error, "cannot publish a presence change");
        }
    }
}
