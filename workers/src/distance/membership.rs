//! Which distance instance owns which session: every instance writes a heartbeat key into the
//! `distance_members` KV bucket (entries expire after a few seconds), reads the member list back,
//! and picks each session's owner by rendezvous hashing over that list. All instances compute the
//! same owner from the same list; when an instance joins or dies only its share of sessions moves.

use async_nats::jetstream::{self, kv::Store};
use futures::TryStreamExt;
use std::hash::{DefaultHasher, Hash, Hasher};
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
        let score = |member: &String| {
            let mut hasher = DefaultHasher::new();
            member.hash(&mut hasher);
            session_id.hash(&mut hasher);
            hasher.finish()
        };
        self.members.iter().max_by_key(|member| score(member)) == Some(&self.me)
    }
}
