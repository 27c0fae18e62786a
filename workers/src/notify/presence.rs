//! Whether a recipient is online (contract section 8), read where the lifecycle worker keeps it:
//! `online.<user>` in the `presence` KV bucket, "1" from their first socket until their last one
//! has been closed for `PRESENCE_GRACE_SECS`. A user who never connected has no key: offline.
//!
//! Unlike the snapshots' reading, a failed read is an error here, not "offline": during a NATS
//! outage the notify worker waits rather than pushing users who may well be online.

use async_nats::jetstream::kv;

/// The presence bucket could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read presence of {user_id}: {source}")]
pub struct PresenceError {
    user_id: String,
    source: kv::EntryError,
}

/// Whether `user_id` holds an open socket (or left less than the grace period ago).
pub async fn is_online(store: &kv::Store, user_id: &str) -> Result<bool, PresenceError> {
    match store.get(format!("online.{user_id}")).await {
        Ok(value) => Ok(value.is_some_and(|value| value.as_ref() == b"1")),
        Err(source) => Err(PresenceError {
            user_id: user_id.to_owned(),
            source,
        }),
    }
}

/// Which of `user_ids` are online, read concurrently (a sweep may ask about many users).
pub async fn online_among(
    store: &kv::Store,
    user_ids: impl IntoIterator<Item = String>,
) -> Result<std::collections::HashSet<String>, PresenceError> {
    use futures::StreamExt;
    let mut online = std::collections::HashSet::new();
    let mut reads = futures::stream::iter(user_ids.into_iter().map(|user_id| async move {
        let is_online = is_online(store, &user_id).await?;
        Ok::<_, PresenceError>((user_id, is_online))
    }))
    .buffer_unordered(64);
    while let Some(read) = reads.next().await {
        let (user_id, is_online) = read?;
        if is_online {
            online.insert(user_id);
        }
    }
    Ok(online)
}
