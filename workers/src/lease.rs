//! Time-boxed leases in the `leases` KV bucket: the first instance to write a key that is absent
//! (or expired) holds it until its per-key TTL runs out, so periodic work runs once per period
//! across instances, and an instance that dies holds nothing for longer than the TTL.
//!
//! Written as a conditional publish (`Nats-Expected-Last-Subject-Sequence` + `Nats-TTL`) because
//! the client's `create_with_ttl` drops the TTL when re-creating a key after a delete marker.

use async_nats::jetstream::{self, kv};
use shared::nats::LEASES_BUCKET;
use std::time::Duration;

pub struct Leases {
    context: jetstream::Context,
    store: kv::Store,
}

impl Leases {
    pub async fn open(nats: &async_nats::Client) -> anyhow::Result<Leases> {
        let context = jetstream::new(nats.clone());
        let store = context
            .get_key_value(LEASES_BUCKET)
            .await
            .map_err(|error| anyhow::anyhow!("KV bucket {LEASES_BUCKET}: {error}"))?;
        Ok(Leases { context, store })
    }

    /// Takes the lease `name` for `ttl` (whole seconds, at least 1) if nobody holds it.
    pub async fn try_acquire(&self, name: &str, ttl: Duration) -> anyhow::Result<bool> {
        let expected = match self.store.entry(name).await? {
            None => 0,
            Some(entry) if entry.operation != kv::Operation::Put => entry.revision,
            Some(_) => return Ok(false),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-TTL", format!("{}s", ttl.as_secs().max(1)).as_str());
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expected.to_string().as_str(),
        );
        let subject = format!("$KV.{LEASES_BUCKET}.{name}");
        let published = self
            .context
            .publish_with_headers(subject, headers, bytes::Bytes::from_static(b"held"))
            .await?;
        Ok(published.await.is_ok())
    }
}
