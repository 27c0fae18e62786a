//! Builds `work_assigned` for a pending order: the seeker's profile (else the token's name), the
//! distance from the order's location to the provider's last known location ("2.5 km"), or null.

use shared::frames::Event;
use shared::geo::{self, Position};
use sqlx::{FromRow, PgExecutor};

#[derive(FromRow)]
struct Row {
    work_id: i64,
    service_type: String,
    message: Option<String>,
    latitude: f64,
    longitude: f64,
    created_at: chrono::DateTime<chrono::Utc>,
    profile_name: Option<String>,
    token_name: Option<String>,
    mobile: Option<String>,
    profile_pic: Option<String>,
    provider_latitude: Option<f64>,
    provider_longitude: Option<f64>,
}

macro_rules! assigned_select {
    ($tail:literal) => {
        concat!(
            "SELECT w.work_id, w.service_type, w.message, w.latitude, w.longitude, w.created_at,
                    p.name AS profile_name, u.token_name, p.mobile, p.profile_pic,
                    ps.latitude AS provider_latitude, ps.longitude AS provider_longitude
             FROM work_orders w
             JOIN users u ON u.user_id = w.seeker_id
             LEFT JOIN profiles p ON p.user_id = w.seeker_id
             LEFT JOIN provider_status ps ON ps.user_id = w.provider_id ",
            $tail
        )
    };
}

fn event(row: Row) -> Event {
    let order = Position::new(row.latitude, row.longitude);
    let provider = row
        .provider_latitude
        .zip(row.provider_longitude)
        .and_then(|(latitude, longitude)| Position::new(latitude, longitude));
    let distance = order
        .zip(provider)
        .map(|(order, provider)| geo::format_km(geo::distance_meters(order, provider)));
    Event::WorkAssigned {
        work_id: row.work_id,
        seeker_name: row.profile_name.or(row.token_name),
        seeker_mobile: row.mobile,
        service_type: row.service_type,
        distance,
        message: row.message,
        seeker_profile_pic: row.profile_pic,
        created_at: shared::time::rfc3339(row.created_at),
        timestamp: shared::time::now(),
    }
}

/// The event for one order.
pub async fn for_order<'e>(
    executor: impl PgExecutor<'e>,
    work_id: i64,
) -> Result<Option<Event>, sqlx::Error> {
    let row = sqlx::query_as::<_, Row>(assigned_select!("WHERE w.work_id = $1"))
        .bind(work_id)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(event))
}

/// At most this many pending orders are sent again to a provider who connects (contract section
/// 12): however many seekers wrote while they were away, one connection never floods the socket.
pub const REPLAYED_ON_CONNECT: i64 = 20;

/// The events for the newest `REPLAYED_ON_CONNECT` orders still pending for a provider, oldest
/// first among them (the order they were made in, as they would have arrived live).
pub async fn pending_for_provider<'e>(
    executor: impl PgExecutor<'e>,
    provider_id: &str,
) -> Result<Vec<Event>, sqlx::Error> {
    let mut rows = sqlx::query_as::<_, Row>(assigned_select!(
        "WHERE w.provider_id = $1 AND w.status = 'pending'
         ORDER BY w.created_at DESC, w.work_id DESC LIMIT $2"
    ))
    .bind(provider_id)
    .bind(REPLAYED_ON_CONNECT)
    .fetch_all(executor)
    .await?;
    rows.reverse();
    Ok(rows.into_iter().map(event).collect())
}
