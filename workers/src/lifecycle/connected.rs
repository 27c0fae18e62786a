//! `user.<id>.connected`: the gateway announces each new socket. The user is recorded, and a
//! provider's socket gets `work_assigned` again for each order still pending, so no order is missed
//! while they were offline. Core NATS in the lifecycle queue group: if this notice is lost, the
//! next connection replays again.

use super::work_assigned;
use crate::outbox::{Delivery, publish};
use futures::StreamExt;
use shared::auth::Role;
use shared::headers;
use shared::subjects::{USERS_CONNECTED, queue};
use sqlx::PgPool;

pub async fn serve(nats: async_nats::Client, pool: PgPool) -> anyhow::Result<()> {
    let mut notices = nats
        .queue_subscribe(USERS_CONNECTED, queue::LIFECYCLE.to_owned())
        .await?;
    while let Some(notice) = notices.next().await {
        let (nats, pool) = (nats.clone(), pool.clone());
        tokio::spawn(async move {
            let Some(headers) = notice.headers.as_ref() else {
                return;
            };
            let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
            let (Some(user_id), Some(role), Some(conn_id)) = (
                header(headers::USER_ID),
                header(headers::ROLE).and_then(|role| Role::parse(&role)),
                header(headers::CONN_ID),
            ) else {
                return;
            };
            if let Err(error) = replay(
                &nats,
                &pool,
                &user_id,
                role,
                &conn_id,
                header(headers::USER_NAME),
            )
            .await
            {
                tracing::warn!(%error, %user_id, "cannot handle a connection notice");
            }
        });
    }
    Ok(())
}

async fn replay(
    nats: &async_nats::Client,
    pool: &PgPool,
    user_id: &str,
    role: Role,
    conn_id: &str,
    name: Option<String>,
) -> Result<(), sqlx::Error> {
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
