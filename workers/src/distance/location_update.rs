//! `location_update` for a session this instance owns: checks the sender, the coordinates and the
//! optional `accuracy`, records the position, sends `distance_update` to both parties when one is
//! due, and hands the provider's fixes to the arrival rule (`arrival`).

use super::DistanceConfig;
use super::arrival::{self, ArrivalState, Step};
use super::tracker::{TrackedSession, Tracker};
use crate::closed_sessions::Closed;
use crate::outbox::{Delivery, publish};
use crate::runtime::Sender;
use serde_json::Value;
use shared::auth::Role;
use shared::frames::{ClientFrame, Event, errors};
use shared::geo::{self, Position};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

#[derive(FromRow)]
pub struct StoredSession {
    pub session_id: Uuid,
    pub seeker_id: String,
    pub provider_id: String,
    pub connection_state: String,
    pub seeker_latitude: Option<f64>,
    pub seeker_longitude: Option<f64>,
    pub provider_latitude: Option<f64>,
    pub provider_longitude: Option<f64>,
    pub current_distance_meters: Option<f64>,
    pub arrivals_count: i16,
    pub arrival_armed: bool,
}

/// `SELECT` of a [`StoredSession`] followed by `$tail`, for the one-session load here and the
/// take-over in `tick`.
macro_rules! stored_select {
    ($tail:literal) => {
        concat!(
            "SELECT session_id, seeker_id, provider_id, connection_state, seeker_latitude, \
             seeker_longitude, provider_latitude, provider_longitude, current_distance_meters, \
             arrivals_count, arrival_armed FROM work_sessions ",
            $tail
        )
    };
}
pub(crate) use stored_select;

impl StoredSession {
    pub fn into_tracked(self) -> TrackedSession {
        let position = |latitude: Option<f64>, longitude: Option<f64>| {
            latitude
                .zip(longitude)
                .and_then(|(latitude, longitude)| Position::new(latitude, longitude))
        };
        let seeker = position(self.seeker_latitude, self.seeker_longitude);
        let provider = position(self.provider_latitude, self.provider_longitude);
        TrackedSession {
            seeker_id: self.seeker_id,
            provider_id: self.provider_id,
            seeker,
            provider,
            used: seeker.zip(provider),
            last_distance_meters: self.current_distance_meters,
            // Stored positions carry no accuracy: they count, as a fix without one does.
            seeker_for_arrival: seeker,
            arrival: ArrivalState::loaded(self.arrivals_count, self.arrival_armed),
        }
    }
}

fn coordinates(latitude: Option<Value>, longitude: Option<Value>) -> Option<Position> {
    Position::new(latitude?.as_f64()?, longitude?.as_f64()?)
}

pub async fn handle(
    tracker: &mut Tracker,
    pool: &PgPool,
    nats: &async_nats::Client,
    config: &DistanceConfig,
    session_id: Uuid,
    message: async_nats::Message,
) {
    let Some(sender) = Sender::from_headers(message.headers.as_ref()) else {
        tracing::warn!(subject = %message.subject, "location frame without gateway headers");
        return;
    };
    let refuse = |error: &str| {
        let event = Event::error(error, Some("location_update"), Some(session_id));
        Delivery::to_socket(&sender.user_id, &sender.conn_id, &event)
    };
    let (position, accuracy) = match serde_json::from_slice::<ClientFrame>(&message.payload) {
        Ok(ClientFrame::LocationUpdate {
            latitude,
            longitude,
            accuracy,
            ..
        }) => (
            coordinates(latitude, longitude),
            arrival::parse_accuracy(accuracy.as_ref()),
        ),
        _ => (None, Ok(None)),
    };
    if let Some(closed) = tracker.closed.get(&session_id) {
        publish(nats, &[refuse(closed.refusal_for(&sender.user_id))], "").await;
        return;
    }
    if let std::collections::hash_map::Entry::Vacant(vacant) = tracker.sessions.entry(session_id) {
        match load(pool, session_id).await {
            Ok(Some(stored))
                if stored.connection_state == "waiting" || stored.connection_state == "active" =>
            {
                vacant.insert(stored.into_tracked());
            }
            Ok(stored) => {
                let closed = match stored {
                    Some(stored) => Closed::Ended {
                        seeker_id: stored.seeker_id,
                        provider_id: stored.provider_id,
                    },
                    None => Closed::Unknown,
                };
                publish(nats, &[refuse(closed.refusal_for(&sender.user_id))], "").await;
                tracker.closed.remember(session_id, closed);
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot load a session; dropping a location frame");
                return;
            }
        }
    }
    let Some(session) = tracker.sessions.get_mut(&session_id) else {
        return;
    };
    if !is_participant(&session.seeker_id, &session.provider_id, &sender) {
        publish(nats, &[refuse(errors::SESSION_NOT_FOUND)], "").await;
        return;
    }
    let Some(position) = position else {
        publish(nats, &[refuse(errors::INVALID_COORDINATES)], "").await;
        return;
    };
    // Contract section 14: a fix with a bad accuracy is not used at all.
    let Ok(accuracy) = accuracy else {
        publish(nats, &[refuse(errors::INVALID_ACCURACY)], "").await;
        return;
    };
    let counts_for_arrival = config.arrival.accurate_enough(accuracy);
    match sender.role {
        Role::Seeker => {
            session.seeker = Some(position);
            if counts_for_arrival {
                session.seeker_for_arrival = Some(position);
            }
        }
        Role::Provider => session.provider = Some(position),
        // is_participant refused it above: a mediator has no position in a session.
        Role::Mediator => return,
    }
    if session.update_due(config.min_move_meters) {
        send_update(nats, session_id, session).await;
    }
    if sender.role == Role::Provider
        && counts_for_arrival
        && let Some(seeker) = session.seeker_for_arrival
    {
        let distance_meters = geo::distance_meters(seeker, position);
        let now = std::time::Instant::now();
        match session
            .arrival
            .on_provider_fix(&config.arrival, distance_meters, now)
        {
            Step::Nothing => {}
            Step::Announce => announce(pool, nats, session_id, session, distance_meters).await,
            Step::Rearm => match arrival::rearm(pool, session_id).await {
                Ok(stored) => session.arrival.rearmed(stored),
                Err(error) => {
                    tracing::warn!(%error, %session_id, "cannot re-arm the arrival; retrying on a later fix");
                    session.arrival.write_failed(now);
                }
            },
        }
    }
}

/// The provider's run is complete: record the arrival and, if this instance is the one that did,
/// tell both parties and the chat.
async fn announce(
    pool: &PgPool,
    nats: &async_nats::Client,
    session_id: Uuid,
    session: &mut TrackedSession,
    distance_meters: f64,
) {
    match arrival::announce(pool, session_id, distance_meters).await {
        Ok(Some(announcement)) => {
            session.arrival.announced(Some(announcement.arrivals_count));
            publish(nats, &announcement.deliveries, "").await;
            metrics::counter!("distance_arrivals_total").increment(1);
            tracing::info!(
                %session_id,
                distance_meters,
                arrivals = announcement.arrivals_count,
                "the provider arrived"
            );
        }
        // Another instance announced this approach, or the session ended meanwhile.
        Ok(None) => session.arrival.announced(None),
        Err(error) => {
            tracing::warn!(%error, %session_id, "cannot record an arrival; retrying on a later fix");
            session.arrival.write_failed(std::time::Instant::now());
        }
    }
}

fn is_participant(seeker_id: &str, provider_id: &str, sender: &Sender) -> bool {
    match sender.role {
        Role::Seeker => seeker_id == sender.user_id,
        Role::Provider => provider_id == sender.user_id,
        Role::Mediator => false,
    }
}

async fn load(pool: &PgPool, session_id: Uuid) -> Result<Option<StoredSession>, sqlx::Error> {
    sqlx::query_as::<_, StoredSession>(stored_select!("WHERE session_id = $1"))
        .bind(session_id)
        .fetch_optional(pool)
        .await
}

/// Sends `distance_update` from the latest positions to both parties and remembers them as used.
pub async fn send_update(
    nats: &async_nats::Client,
    session_id: Uuid,
    session: &mut TrackedSession,
) {
    let Some((seeker, provider)) = session.both() else {
        return;
    };
    let meters = geo::distance_meters(seeker, provider);
    session.used = Some((seeker, provider));
    session.last_distance_meters = Some(meters);
    let event = Event::DistanceUpdate {
        session_id,
        distance_meters: (meters * 10.0).round() / 10.0,
        distance_formatted: geo::format_away(meters),
        timestamp: shared::time::now(),
    };
    let deliveries = [
        Delivery::to_user(&session.seeker_id, &event),
        Delivery::to_user(&session.provider_id, &event),
    ];
    publish(nats, &deliveries, "").await;
}
