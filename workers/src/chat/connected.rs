//! Re-sends (contract sections 7 and 12). Events travel over core NATS and can be lost in a blip,
//! so a socket gets again every chat message addressed to its user that the user has not got:
//! - `user.<id>.connected`: a socket opened (or a gateway's NATS connection came back and it
//!   announced its sockets again): every session of the user's;
//! - `session.<id>.joined`: a Socket.IO socket joined that session's room. The gateway shows a
//!   Socket.IO client the chat of the rooms it joined only, so what was re-sent on connect, before
//!   any room, never reached it: that session's messages are sent again to that socket.
//!
//! What "addressed to the user and not got" is:
//! - a party (seeker, provider), in its live sessions and its disputed ones (ended ones included:
//!   their chat goes on): the other party's messages not marked delivered, and the mediator's
//!   messages this party has not acknowledged (`<party>_delivered_at`: the mediator writes to both
//!   parties, and one party's receipt says nothing of the other's devices);
//! - a mediator, in the sessions whose dispute it joined: the parties' messages written since it
//!   joined and after how far it has read (`mediator_read_seq`). A mediator's receipts change
//!   nothing (section 10), so its read position stands for its delivery: what it has not read yet
//!   comes again at each connection, and its client drops the `message_id`s it already has.
//!
//! Oldest first, same `message_id`, one bounded page per session (`page.rs`: at most 200 messages
//! and 256 KiB of events), to the one socket. Core NATS in the chat queue group; read-only.

use super::page::{PAGE_BYTES, PAGE_MESSAGES, Page};
use super::stored::StoredMessage;
use crate::connections::{self, Connected};
use crate::outbox::{Delivery, publish};
use shared::auth::Role;
use shared::subjects::{self, queue};
use sqlx::PgPool;
use uuid::Uuid;

/// The messages not yet delivered to `$party` (`seeker` or `provider`, user `$1`) in its live and
/// disputed sessions (`$4`: that session only, or NULL for all): the other party's not marked
/// delivered and the mediator's this party has not acknowledged; a bounded page per session
/// (`$2` messages, `$3` bytes), by session then `seq`.
macro_rules! undelivered_to_party {
    ($party:literal, $other_party:literal) => {
        concat!(
            "WITH sessions AS (
                 SELECT session_id FROM work_sessions
                 WHERE ",
            $party,
            "_id = $1 AND connection_state IN ('waiting', 'active')
                   AND ($4::uuid IS NULL OR session_id = $4)
                 UNION
                 SELECT session_id FROM work_sessions
                 WHERE ",
            $party,
            "_id = $1 AND dispute_id IS NOT NULL
                   AND ($4::uuid IS NULL OR session_id = $4))
             SELECT page.* FROM sessions s CROSS JOIN LATERAL (",
            $crate::bounded_page!(
                "$3",
                "SELECT ",
                $crate::stored_message_columns!(),
                " FROM chat_messages
                 WHERE session_id = s.session_id AND (expires_at IS NULL OR expires_at > now())
                   AND ((sender_type = '",
                $other_party,
                "' AND delivery_status = 'sent')
                        OR (sender_type = 'mediator' AND ",
                $party,
                "_delivered_at IS NULL))
                 ORDER BY seq LIMIT $2"
            ),
            ") page ORDER BY page.session_id, page.seq"
        )
    };
}

/// The parties' messages mediator `$1` has not read in the sessions whose dispute it joined
/// (`$4`: that session only, or NULL for all), written since it joined; pages as above.
const UNREAD_BY_MEDIATOR: &str = concat!(
    "SELECT page.* FROM work_sessions s JOIN disputes d ON d.dispute_id = s.dispute_id
     CROSS JOIN LATERAL (",
    crate::bounded_page!(
        "$3",
        crate::stored_message_select!(
            "WHERE session_id = s.session_id AND sender_type IN ('seeker', 'provider')
               AND seq > s.mediator_read_seq AND created_at >= d.joined_at
               AND (expires_at IS NULL OR expires_at > now())
             ORDER BY seq LIMIT $2"
        )
    ),
    ") page
     WHERE s.mediator_id = $1 AND ($4::uuid IS NULL OR s.session_id = $4)
     ORDER BY page.session_id, page.seq"
);

/// Answers both notices until the NATS connection ends.
pub async fn serve(nats: async_nats::Client, pool: PgPool) -> anyhow::Result<()> {
    let on_connect = connections::serve(nats.clone(), queue::CHAT, {
        let (nats, pool) = (nats.clone(), pool.clone());
        move |connected: Connected| {
            let (nats, pool) = (nats.clone(), pool.clone());
            async move { resend(&nats, &pool, &connected, None).await }
        }
    });
    let on_join = connections::serve_notices(
        nats.clone(),
        subjects::SESSIONS_JOINED,
        queue::CHAT,
        move |connected: Connected, subject: &str| {
            let (nats, pool) = (nats.clone(), pool.clone());
            let session_id = subjects::session_id_of(subject);
            async move {
                // The gateway builds the subject from a checked UUID; anything else names nothing.
                if let Some(session_id) = session_id {
                    resend(&nats, &pool, &connected, Some(session_id)).await;
                }
            }
        },
    );
    tokio::select! {
        result = on_connect => result,
        result = on_join => result,
    }
}

async fn resend(
    nats: &async_nats::Client,
    pool: &PgPool,
    connected: &Connected,
    only_session: Option<Uuid>,
) {
    match undelivered(pool, connected, only_session).await {
        Ok(deliveries) if deliveries.is_empty() => {}
        Ok(deliveries) => {
            tracing::debug!(
                user_id = %connected.user_id,
                messages = deliveries.len(),
                "re-sending undelivered messages"
            );
            publish(nats, &deliveries, &connected.conn_id).await;
        }
        Err(error) => {
            tracing::warn!(%error, user_id = %connected.user_id, "cannot re-send undelivered messages");
        }
    }
}

/// The events to re-send to the connected socket: one page per session, oldest first.
async fn undelivered(
    pool: &PgPool,
    connected: &Connected,
    only_session: Option<Uuid>,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let Connected {
        user_id,
        role,
        conn_id,
        ..
    } = connected;
    let query = match role {
        Role::Seeker => undelivered_to_party!("seeker", "provider"),
        Role::Provider => undelivered_to_party!("provider", "seeker"),
        Role::Mediator => UNREAD_BY_MEDIATOR,
    };
    let messages = sqlx::query_as::<_, StoredMessage>(query)
        .bind(user_id)
        .bind(PAGE_MESSAGES as i64)
        .bind(i64::try_from(PAGE_BYTES).unwrap_or(i64::MAX))
        .bind(only_session)
        .fetch_all(pool)
        .await?;
    let mut deliveries = Vec::new();
    let mut page: Option<(Uuid, Page)> = None;
    for mut message in messages {
        if page
            .as_ref()
            .is_none_or(|(session_id, _)| *session_id != message.session_id)
        {
            if let Some((_, full)) = page.take() {
                deliveries.extend(full.into_deliveries());
            }
            page = Some((message.session_id, Page::with_byte_budget(PAGE_BYTES)));
        }
        if message.sender_type == Role::Mediator.as_str() {
            // Its one status may say another party's phone has it; this party's has not.
            message.delivery_status = String::from("sent");
        }
        let delivery = Delivery::to_socket(user_id, conn_id, &message.event_for(*role));
        if let Some((_, current)) = page.as_mut() {
            current.offer(delivery);
        }
    }
    if let Some((_, last)) = page {
        deliveries.extend(last.into_deliveries());
    }
    Ok(deliveries)
}
