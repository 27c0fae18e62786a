//! Presence (contract section 8). Gateways state facts in the `presence` KV bucket
//! (`socket.<user>.<gateway>` while the user holds a socket there, `gateway.<gateway>` heartbeats
//! with a TTL); this turns them into `presence` events. A user is online while any socket key of
//! theirs exists on a live gateway. When their first appears, the other participants of each of
//! their live sessions hear `online: true`; when the last is gone and stays gone for
//! `PRESENCE_GRACE_SECS`, `online: false` (a quick reconnect sends nothing). A gateway whose
//! heartbeat expired is dead: its socket keys are dropped (within `HEARTBEAT_TTL` + grace).
//!
//! Every lifecycle instance watches the bucket and computes the same thing; the transition itself
//! is a compare-and-set of `online.<user>` in the bucket, so exactly one instance wins it and
//! announces it. The snapshots read `online.<user>` ([`is_online`]).

use crate::outbox::{Delivery, publish};
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use shared::auth::Role;
use shared::frames::Event;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// How often dead gateways and lapsed grace periods are looked at.
const SWEEP: Duration = Duration::from_millis(250);
/// Sockets on a gateway never heard from (no heartbeat since this instance started watching)
/// count as gone after this: longer than a heartbeat lives.
const UNHEARD_LIMIT: Duration = Duration::from_secs(8);

/// Whether `user_id` is online, as the last transition left it.
pub async fn is_online(store: &kv::Store, user_id: &str) -> bool {
    matches!(store.get(format!("online.{user_id}")).await, Ok(Some(value)) if value.as_ref() == b"1")
}

/// Opens the presence bucket (provisioned at start).
pub async fn open(nats: &async_nats::Client) -> anyhow::Result<kv::Store> {
    jetstream::new(nats.clone())
        .get_key_value(shared::nats::PRESENCE_BUCKET)
        .await
        .map_err(|error| anyhow::anyhow!("KV bucket {}: {error}", shared::nats::PRESENCE_BUCKET))
}

#[derive(Default)]
struct Facts {
    /// user -> gateways where they hold a socket.
    sockets: HashMap<String, HashSet<String>>,
    /// Gateways whose heartbeat is current.
    live_gateways: HashSet<String>,
    /// Gateways whose heartbeat expired.
    dead_gateways: HashSet<String>,
    /// Gateways holding sockets that have not been heard from, since when.
    unheard_since: HashMap<String, Instant>,
    /// Users whose last socket went away, and since when.
    leaving: HashMap<String, Instant>,
}

impl Facts {
    fn gateway_alive(&mut self, gateway: &str) -> bool {
        self.dead_gateways.remove(gateway);
        self.unheard_since.remove(gateway);
        self.live_gateways.insert(gateway.to_owned())
    }

    fn gateway_died(&mut self, gateway: &str) -> bool {
        self.dead_gateways.insert(gateway.to_owned());
        self.live_gateways.remove(gateway)
    }

    fn add_socket(&mut self, user_id: &str, gateway: &str) -> bool {
        self.leaving.remove(user_id);
        if !self.live_gateways.contains(gateway) && !self.dead_gateways.contains(gateway) {
            self.unheard_since
                .entry(gateway.to_owned())
                .or_insert_with(Instant::now);
        }
        let gateways = self.sockets.entry(user_id.to_owned()).or_default();
        let first = gateways.is_empty();
        gateways.insert(gateway.to_owned());
        first
    }

    fn remove_socket(&mut self, user_id: &str, gateway: &str) {
        if let Some(gateways) = self.sockets.get_mut(user_id) {
            gateways.remove(gateway);
            if gateways.is_empty() {
                self.sockets.remove(user_id);
                self.leaving.insert(user_id.to_owned(), Instant::now());
            }
        }
    }

    /// Whether a gateway's sockets are gone: its heartbeat expired, or it was never heard from
    /// for longer than a heartbeat lives.
    fn is_dead(&self, gateway: &str) -> bool {
        !self.live_gateways.contains(gateway)
            && (self.dead_gateways.contains(gateway)
                || self
                    .unheard_since
                    .get(gateway)
                    .is_none_or(|since| since.elapsed() >= UNHEARD_LIMIT))
    }

    /// Drops the sockets of dead gateways; returns their keys to purge.
    fn drop_dead_gateways(&mut self) -> Vec<(String, String)> {
        let dead: Vec<(String, String)> = self
            .sockets
            .iter()
            .flat_map(|(user_id, gateways)| {
                gateways
                    .iter()
                    .filter(|gateway| self.is_dead(gateway))
                    .map(|gateway| (user_id.clone(), gateway.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (user_id, gateway) in &dead {
            self.remove_socket(user_id, gateway);
        }
        dead
    }

    /// Users whose grace period ran out (they are gone for good).
    fn gone(&mut self, grace: Duration) -> Vec<String> {
        let gone: Vec<String> = self
            .leaving
            .iter()
            .filter(|(_, since)| since.elapsed() >= grace)
            .map(|(user_id, _)| user_id.clone())
            .collect();
        for user_id in &gone {
            self.leaving.remove(user_id);
        }
        gone
    }
}

pub async fn serve(
    nats: async_nats::Client,
    pool: PgPool,
    store: kv::Store,
    grace: Duration,
) -> anyhow::Result<()> {
    let (nats, pool, store) = (&nats, &pool, &store);
    loop {
        // The bucket's current state first (every key's latest value), then each change. A watch
        // that ends (NATS restarted, say) is opened again and the facts read anew; users online
        // meanwhile stay online (their state does not change), and ones who left are announced
        // when the grace runs out after the new watch.
        match store.watch_with_history(">").await {
            Ok(watch) => follow(nats, pool, store, grace, watch).await,
            Err(error) => tracing::warn!(%error, "cannot watch the presence bucket; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Follows one watch of the bucket until it ends.
async fn follow(
    nats: &async_nats::Client,
    pool: &PgPool,
    store: &kv::Store,
    grace: Duration,
    mut watch: kv::Watch,
) {
    let mut facts = Facts::default();
    let mut sweeps = tokio::time::interval(SWEEP);
    // Until the bucket's current state has been read, a socket key may precede its gateway's.
    let mut caught_up = false;
    loop {
        tokio::select! {
            entry = watch.next() => {
                let Some(entry) = entry else {
                    tracing::warn!("the presence watch ended; watching again");
                    return;
                };
                let Ok(entry) = entry else { continue };
                if entry.delta == 0 {
                    caught_up = true;
                }
                let present = entry.operation == kv::Operation::Put;
                let mut parts = entry.key.splitn(3, '.');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("gateway"), Some(gateway), None) => {
                        if present {
                            if facts.gateway_alive(gateway) {
                                tracing::info!(%gateway, "gateway alive");
                            }
                        } else if facts.gateway_died(gateway) {
                            tracing::info!(%gateway, "gateway heartbeat expired: its users' sockets are gone");
                        }
                    }
                    (Some("socket"), Some(user_id), Some(gateway)) => {
                        tracing::debug!(%user_id, %gateway, present, "socket fact");
                        if present {
                            if facts.add_socket(user_id, gateway) {
                                announce(nats, pool, store, user_id, true).await;
                            }
                        } else {
                            facts.remove_socket(user_id, gateway);
                        }
                    }
                    _ => {}
                }
            }
            _ = sweeps.tick() => {
                if caught_up {
                    for (user_id, gateway) in facts.drop_dead_gateways() {
                        tracing::debug!(%user_id, %gateway, "dropping a socket of a dead gateway");
                        // Idempotent: every instance may purge the same key.
                        let _ = store.purge(format!("socket.{user_id}.{gateway}")).await;
                    }
                }
                for user_id in facts.gone(grace) {
                    announce(nats, pool, store, &user_id, false).await;
                }
            }
        }
    }
}

/// Sets `online.<user>`; when this instance made the change, tells the other participants of the
/// user's live sessions.
async fn announce(
    nats: &async_nats::Client,
    pool: &PgPool,
    store: &kv::Store,
    user_id: &str,
    online: bool,
) {
    if !changed_state(store, user_id, online).await {
        return;
    }
    // Live sessions, and disputed ones (whose chat goes on after the end).
    let sessions: Vec<(uuid::Uuid, String, String, Option<String>)> = match sqlx::query_as(
        "SELECT session_id, seeker_id, provider_id, mediator_id FROM work_sessions
         WHERE (seeker_id = $1 OR provider_id = $1) AND connection_state IN ('waiting', 'active')
         UNION
         SELECT session_id, seeker_id, provider_id, mediator_id FROM work_sessions
         WHERE dispute_id IS NOT NULL AND (seeker_id = $1 OR provider_id = $1 OR mediator_id = $1)",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
    {
        Ok(sessions) => sessions,
        Err(error) => {
            tracing::warn!(%error, %user_id, "cannot find the sessions to announce presence to");
            return;
        }
    };
    let mut deliveries: Vec<Delivery> = Vec::new();
    for (session_id, seeker_id, provider_id, mediator_id) in sessions {
        let participants = [
            (Role::Seeker, Some(seeker_id)),
            (Role::Provider, Some(provider_id)),
            (Role::Mediator, mediator_id),
        ];
        let Some(role) = participants
            .iter()
            .find(|(_, id)| id.as_deref() == Some(user_id))
            .map(|(role, _)| *role)
        else {
            continue;
        };
        let event = Event::Presence {
            session_id,
            role,
            online,
            timestamp: shared::time::now(),
        };
        for (other_role, other) in &participants {
            if let Some(other) = other.as_deref().filter(|_| *other_role != role) {
                deliveries.push(Delivery::to_user(other, &event));
            }
        }
    }
    publish(nats, &deliveries, "").await;
}

/// Compare-and-set of `online.<user>`: true when this call moved it to `online`.
async fn changed_state(store: &kv::Store, user_id: &str, online: bool) -> bool {
    let key = format!("online.{user_id}");
    let wanted: &'static [u8] = if online { b"1" } else { b"0" };
    match store.entry(key.as_str()).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            entry.value.as_ref() != wanted
                && store
                    .update(
                        key.as_str(),
                        bytes::Bytes::from_static(wanted),
                        entry.revision,
                    )
                    .await
                    .is_ok()
        }
        // Never seen (or purged): only coming online is a change.
        Ok(_) => {
            online
                && store
                    .create(key.as_str(), bytes::Bytes::from_static(wanted))
                    .await
                    .is_ok()
        }
        Err(error) => {
            tracing::warn!(%error, %user_id, "cannot read presence state");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_gone_only_after_the_grace_and_a_dead_gateway_takes_its_sockets() {
        let mut facts = Facts::default();
        facts.gateway_alive("g1");
        assert!(facts.add_socket("u1", "g1"));
        assert!(
            !facts.add_socket("u1", "g2"),
            "a second gateway is not a new arrival"
        );
        facts.remove_socket("u1", "g1");
        assert!(facts.leaving.is_empty(), "still on g2");
        // g2 has not been heard from yet: its socket stays for a while.
        assert!(facts.drop_dead_gateways().is_empty());
        // Its heartbeat expires: its socket goes.
        facts.gateway_alive("g2");
        facts.gateway_died("g2");
        assert_eq!(
            facts.drop_dead_gateways(),
            vec![(String::from("u1"), String::from("g2"))]
        );
        assert!(
            facts.gone(Duration::from_secs(60)).is_empty(),
            "within the grace"
        );
        assert_eq!(facts.gone(Duration::ZERO), vec![String::from("u1")]);
        // Back within the grace: no longer leaving.
        facts.remove_socket("u2", "g1");
        facts.add_socket("u3", "g1");
        facts.remove_socket("u3", "g1");
        facts.add_socket("u3", "g1");
        assert!(facts.gone(Duration::ZERO).is_empty());
    }
}
