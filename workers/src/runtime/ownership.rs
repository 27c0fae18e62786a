//! Which instance of a worker kind pulls which partition: every instance writes a heartbeat key
//! `<kind>.<instance>` into the `worker_members` KV bucket (every 250 ms; entries expire after
//! 1 s, so a crashed instance's partitions move within about a second), reads its
//! kind's members back, and owns each partition whose rendezvous score it tops. All instances
//! compute the same owners from the same list; when one joins or dies only its share moves.
//!
//! Members also watch the bucket: a joining instance's first heartbeat and a leaving one's
//! deleted key reach the others at once, so partitions move within milliseconds of a restart
//! rather than at the next heartbeat (a crashed instance's key still takes its second to expire).
//!
//! Ownership is a load-spreading agreement, not a lock: two instances may briefly both believe
//! they own a partition. The partition consumer's pinned priority group then lets only one of them
//! receive frames, and the applied-sequence fence in Postgres (`batch`) makes a stale owner's batch
//! apply nothing.

use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;
use shared::subjects::PARTITIONS;
use std::collections::BTreeSet;
use std::time::Duration;

pub const HEARTBEAT: Duration = Duration::from_millis(250);
/// The members are listed again every this many heartbeats (the watch brings changes at once).
pub const READ_MEMBERS_EVERY: u32 = 4;

pub struct Ownership {
    store: kv::Store,
    kind: &'static str,
    me: String,
    members: Vec<String>,
    /// The members before the last change: who owned a partition this instance now takes.
    members_before: Vec<String>,
}

impl Ownership {
    pub async fn join(nats: &async_nats::Client, kind: &'static str) -> anyhow::Result<Ownership> {
        let bucket = shared::nats::WORKER_MEMBERS_BUCKET;
        let store = jetstream::new(nats.clone())
            .get_key_value(bucket)
            .await
            .map_err(|error| anyhow::anyhow!("KV bucket {bucket}: {error}"))?;
        let mut ownership = Ownership {
            store,
            kind,
            me: uuid::Uuid::new_v4().simple().to_string(),
            members: Vec::new(),
            members_before: Vec::new(),
        };
        if let Err(error) = ownership.refresh().await {
            tracing::warn!(%error, "first heartbeat failed");
            ownership.members = vec![ownership.me.clone()];
        }
        Ok(ownership)
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    fn key(&self) -> String {
        format!("{}.{}", self.kind, self.me)
    }

    /// The kind's members as last read.
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Copies the members into `known` when they differ; true then.
    pub fn update(&self, known: &mut Vec<String>) -> bool {
        if *known == self.members {
            return false;
        }
        known.clone_from(&self.members);
        true
    }

    /// Renews this instance's heartbeat.
    pub async fn beat(&self) -> anyhow::Result<()> {
        self.store.put(self.key(), bytes::Bytes::new()).await?;
        Ok(())
    }

    /// Renews this instance's heartbeat and re-reads its kind's members.
    pub async fn refresh(&mut self) -> anyhow::Result<()> {
        self.beat().await?;
        let prefix = format!("{}.", self.kind);
        let mut members: Vec<String> = self
            .store
            .keys()
            .await?
            .try_filter_map(|key| {
                let member = key.strip_prefix(&prefix).map(str::to_owned);
                async move { Ok(member) }
            })
            .try_collect()
            .await?;
        if !members.contains(&self.me) {
            members.push(self.me.clone());
        }
        members.sort();
        if members != self.members {
            tracing::info!(
                kind = self.kind,
                members = members.len(),
                "worker instances changed"
            );
            self.members_before = std::mem::replace(&mut self.members, members);
        }
        Ok(())
    }

    /// Every change to this kind's heartbeat keys, from now on.
    pub async fn changes(&self) -> anyhow::Result<kv::Watch> {
        Ok(self.store.watch(format!("{}.*", self.kind)).await?)
    }

    /// Whether a change seen by [`Ownership::changes`] alters the members: a member's renewed
    /// heartbeat does not; a new member or a member leaving does.
    pub fn is_news(&self, change: &kv::Entry) -> bool {
        let Some(member) = change
            .key
            .strip_prefix(self.kind)
            .and_then(|rest| rest.strip_prefix('.'))
        else {
            return false;
        };
        let known = self.members.iter().any(|known| known == member);
        match change.operation {
            kv::Operation::Put => !known,
            kv::Operation::Delete | kv::Operation::Purge => known,
        }
    }

    /// The partitions this instance pulls.
    pub fn owned(&self) -> BTreeSet<u32> {
        (0..PARTITIONS)
            .filter(|partition| owner(&self.members, *partition) == Some(self.me.as_str()))
            .collect()
    }

    /// Who pulled `partition` before this instance took it, if another instance: its owner among
    /// the members before the last change, or, on joining, among the others.
    pub fn previous_owner(&self, partition: u32) -> Option<String> {
        let others: Vec<String>;
        let before = if self.members_before.iter().any(|member| *member != self.me) {
            &self.members_before
        } else {
            others = self
                .members
                .iter()
                .filter(|member| **member != self.me)
                .cloned()
                .collect();
            &others
        };
        owner(before, partition)
            .filter(|owner| *owner != self.me)
            .map(str::to_owned)
    }

    /// Removes the heartbeat so the others take this instance's partitions at once.
    pub async fn leave(&self) {
        let _ = self.store.delete(self.key()).await;
    }
}

/// The partition's owner among `members` (rendezvous hashing over the partition number).
fn owner(members: &[String], partition: u32) -> Option<&str> {
    crate::rendezvous::owner(members, &partition.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_has_one_owner_and_a_new_member_takes_only_a_share() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let owners: Vec<&str> = (0..PARTITIONS)
            .map(|p| owner(&three, p).expect("an owner"))
            .collect();
        for member in &three {
            assert!(owners.contains(&member.as_str()), "{member} owns nothing");
        }
        let mut four = three.clone();
        four.push(String::from("d"));
        for partition in 0..PARTITIONS {
            let now = owner(&four, partition).expect("an owner");
            assert!(now == "d" || now == owners[partition as usize]);
        }
    }
}
