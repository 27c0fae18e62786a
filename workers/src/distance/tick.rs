//! The periodic part: once per `DISTANCE_TICK_SECS`, persist the owned sessions' positions and
//! last distance in one statement (which also tells which sessions are still live), then send a
//! `distance_update` for every live session whose two positions are known. And the hand-over when
//! the set of instances changes.

use super::location_update::{StoredSession, send_update, stored_select};
use super::membership::Membership;
use super::tracker::Tracker;
use sqlx::PgPool;
use uuid::Uuid;

pub async fn run(tracker: &mut Tracker, pool: &PgPool, nats: &async_nats::Client) {
    if tracker.sessions.is_empty() {
        return;
    }
    match persist(tracker, pool, None).await {
        Ok(live) => tracker
            .sessions
            .retain(|session_id, _| live.contains(session_id)),
        Err(error) => tracing::warn!(%error, "cannot persist positions; ticking from memory"),
    }
    for (session_id, session) in tracker.sessions.iter_mut() {
        send_update(nats, *session_id, session).await;
    }
    metrics::counter!("distance_ticks_total").increment(tracker.sessions.len() as u64);
}

/// Writes positions and last distances of the tracked sessions (or only `only`) in one batched
/// UPDATE; returns the ids of those still waiting or active.
async fn persist(
    tracker: &Tracker,
    pool: &PgPool,
    only: Option<&[Uuid]>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut ids = Vec::new();
    let (mut seeker_latitudes, mut seeker_longitudes) = (Vec::new(), Vec::new());
    let (mut provider_latitudes, mut provider_longitudes) = (Vec::new(), Vec::new());
    let mut distances = Vec::new();
    for (session_id, session) in &tracker.sessions {
        if only.is_some_and(|only| !only.contains(session_id)) {
            continue;
        }
        ids.push(*session_id);
        seeker_latitudes.push(session.seeker.map(|p| p.latitude));
        seeker_longitudes.push(session.seeker.map(|p| p.longitude));
        provider_latitudes.push(session.provider.map(|p| p.latitude));
        provider_longitudes.push(session.provider.map(|p| p.longitude));
        distances.push(session.last_distance_meters);
    }
    sqlx::query_scalar(
        "UPDATE work_sessions w SET
             seeker_latitude = COALESCE(u.seeker_latitude, w.seeker_latitude),
             seeker_longitude = COALESCE(u.seeker_longitude, w.seeker_longitude),
             provider_latitude = COALESCE(u.provider_latitude, w.provider_latitude),
             provider_longitude = COALESCE(u.provider_longitude, w.provider_longitude),
             current_distance_meters = COALESCE(u.distance, w.current_distance_meters),
             last_distance_update = CASE WHEN u.distance IS NULL THEN w.last_distance_update ELSE now() END
         FROM UNNEST($1::uuid[], $2::float8[], $3::float8[], $4::float8[], $5::float8[], $6::float8[])
              AS u(session_id, seeker_latitude, seeker_longitude, provider_latitude, provider_longitude, distance)
         WHERE w.session_id = u.session_id AND w.connection_state IN ('waiting', 'active')
         RETURNING w.session_id",
    )
    .bind(&ids)
    .bind(&seeker_latitudes)
    .bind(&seeker_longitudes)
    .bind(&provider_latitudes)
    .bind(&provider_longitudes)
    .bind(&distances)
    .fetch_all(pool)
    .await
}

/// After the set of instances changed: hand over sessions this instance no longer owns (persisted
/// first, so the new owner loads fresh positions) and take over live sessions it now owns.
pub async fn rebalance(tracker: &mut Tracker, membership: &Membership, pool: &PgPool) {
    let leaving: Vec<Uuid> = tracker
        .sessions
        .keys()
        .filter(|session_id| !membership.owns(session_id))
        .copied()
        .collect();
    if !leaving.is_empty() {
        if let Err(error) = persist(tracker, pool, Some(&leaving)).await {
            tracing::warn!(%error, "cannot persist sessions being handed over");
        }
        for session_id in &leaving {
            tracker.forget(session_id);
        }
    }
    let stored = sqlx::query_as::<_, StoredSession>(stored_select!(
        "WHERE connection_state IN ('waiting', 'active') \
           AND seeker_latitude IS NOT NULL AND provider_latitude IS NOT NULL"
    ))
    .fetch_all(pool)
    .await;
    match stored {
        Ok(stored) => {
            for session in stored {
                if membership.owns(&session.session_id)
                    && !tracker.sessions.contains_key(&session.session_id)
                {
                    tracker
                        .sessions
                        .insert(session.session_id, session.into_tracked());
                }
            }
        }
        Err(error) => tracing::warn!(%error, "cannot load sessions to take over"),
    }
}
