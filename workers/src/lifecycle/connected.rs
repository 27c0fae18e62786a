//! `user.<id>.connected`: the gateway announces each new socket. The user is recorded, and a
//! provider's socket gets `work_assigned` again for each order still pending, so no order is missed
//! while they were offline: the 20 newest at most (contract section 12: a crowd of seekers cannot
//! flood one socket), sent oldest first among them, the order they were made in. Core NATS in the
//! lifecycle queue group: if this notice is lost, the next connection replays again.

use super::work_assigned;
use crate::connections::{self, Connected};
use crate::outbox::{Delivery, publish};
use shared::auth::Role;
use shared::subjects::queue;
use sqlx::PgPool;

pub async fn serve(nats: async_nats::Client, pool: PgPool) -> anyhow::Result<()> {
    connections::serve(nats.clone(), queue::LIFECYCLE, move |connected: Connected| {
        let (nats, pool) = (nats.clone(), pool.clone());
        async move {
            if let Err(error) = replay(&nats, &pool, &connected).await {
                tracing::warn!(%error, user_id = %connected.user_id, "cannot handle a connection notice");
            }
        }
    })
    .await
}

async fn replay(
    nats: &async_nats::Client,
    pool: &PgPool,
    connected: &Connected,
) -> Result<(), sqlx::Error> {
    let Connected {
        user_id,
        role,
        conn_id,
        name,
    } = connected;
    let (user_id, role, conn_id) = (user_id.as_str(), *role, conn_id.as_str());
    crate::users::record(pool, user_id, role, name.as_deref()).await?;
    if role != Role::Provider {
        return Ok(());
    }
    let deliveries: Vec<Delivery> = work_assigned::pending_for_provider(pool, user_id)
        .await?
        .iter()
        .map(|event| Delivery::to_socket(user_id, conn_id, event))
        .collect();
    publish(nats, &deliveries, conn_id).await;
    Ok(())
}
