//! `GET/PUT /api/provider/status` (`{is_active, latitude?, longitude?}`) and
//! `GET/PUT /api/seeker/search` (`{is_searching, latitude?, longitude?}`). Someone who never set
//! theirs is inactive / not searching. Coordinates left out keep their stored values.

use crate::api_server::Caller;
use serde_json::Value;
use shared::api::{ApiRequest, ApiResponse};
use shared::geo::Position;
use shared::rest::{ProviderStatus, ProviderStatusUpdate, SeekerSearch, SeekerSearchUpdate};
use sqlx::PgPool;

/// An update, whichever of the two it is.
struct StatusBody {
    flag: bool,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    flag: bool,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// The two tables differ only in names, and the two bodies in their flag's.
struct Kind {
    flag: &'static str,
    select: &'static str,
    upsert: &'static str,
    parse: fn(Value) -> Option<StatusBody>,
    answer: fn(StatusRow) -> ApiResponse,
}

const PROVIDER: Kind = Kind {
    flag: "is_active",
    select: "SELECT is_active AS flag, latitude, longitude FROM provider_status WHERE user_id = $1",
    upsert: "INSERT INTO provider_status (user_id, is_active, latitude, longitude) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET is_active = EXCLUDED.is_active,
                 latitude = COALESCE(EXCLUDED.latitude, provider_status.latitude),
                 longitude = COALESCE(EXCLUDED.longitude, provider_status.longitude),
                 updated_at = now()
             RETURNING is_active AS flag, latitude, longitude",
    parse: |body| {
        let update = serde_json::from_value::<ProviderStatusUpdate>(body).ok()?;
        Some(StatusBody {
            flag: update.is_active,
            latitude: update.latitude,
            longitude: update.longitude,
        })
    },
    answer: |row| {
        ApiResponse::ok(ProviderStatus {
            is_active: row.flag,
            latitude: row.latitude,
            longitude: row.longitude,
        })
    },
};

const SEEKER: Kind = Kind {
    flag: "is_searching",
    select: "SELECT is_searching AS flag, latitude, longitude FROM seeker_search WHERE user_id = $1",
    upsert: "INSERT INTO seeker_search (user_id, is_searching, latitude, longitude) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET is_searching = EXCLUDED.is_searching,
                 latitude = COALESCE(EXCLUDED.latitude, seeker_search.latitude),
                 longitude = COALESCE(EXCLUDED.longitude, seeker_search.longitude),
                 updated_at = now()
             RETURNING is_searching AS flag, latitude, longitude",
    parse: |body| {
        let update = serde_json::from_value::<SeekerSearchUpdate>(body).ok()?;
        Some(StatusBody {
            flag: update.is_searching,
            latitude: update.latitude,
            longitude: update.longitude,
        })
    },
    answer: |row| {
        ApiResponse::ok(SeekerSearch {
            is_searching: row.flag,
            latitude: row.latitude,
            longitude: row.longitude,
        })
    },
};

fn answer(kind: &Kind, row: Option<StatusRow>) -> ApiResponse {
    let row = row.unwrap_or(StatusRow {
        flag: false,
        latitude: None,
        longitude: None,
    });
    (kind.answer)(row)
}

async fn get(pool: &PgPool, caller: &Caller, kind: &Kind) -> anyhow::Result<ApiResponse> {
    crate::users::record(pool, &caller.user_id, caller.role, caller.name.as_deref()).await?;
    let row = sqlx::query_as::<_, StatusRow>(kind.select)
        .bind(&caller.user_id)
        .fetch_optional(pool)
        .await?;
    Ok(answer(kind, row))
}

async fn put(
    pool: &PgPool,
    caller: &Caller,
    kind: &Kind,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let Some(body) = request.body.and_then(kind.parse) else {
        return Ok(ApiResponse::error(
            422,
            &format!(
                "expected {{{} (true or false), latitude?, longitude?}}",
                kind.flag
            ),
        ));
    };
    let flag = body.flag;
    match (body.latitude, body.longitude) {
        (None, None) => {}
        (Some(latitude), Some(longitude)) if Position::new(latitude, longitude).is_some() => {}
        _ => {
            return Ok(ApiResponse::error(
                422,
                shared::frames::errors::INVALID_COORDINATES,
            ));
        }
    }
    crate::users::record(pool, &caller.user_id, caller.role, caller.name.as_deref()).await?;
    let row = sqlx::query_as::<_, StatusRow>(kind.upsert)
        .bind(&caller.user_id)
        .bind(flag)
        .bind(body.latitude)
        .bind(body.longitude)
        .fetch_one(pool)
        .await?;
    Ok(answer(kind, Some(row)))
}

pub async fn get_provider(pool: &PgPool, caller: &Caller) -> anyhow::Result<ApiResponse> {
    get(pool, caller, &PROVIDER).await
}

pub async fn put_provider(
    pool: &PgPool,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    put(pool, caller, &PROVIDER, request).await
}

pub async fn get_seeker(pool: &PgPool, caller: &Caller) -> anyhow::Result<ApiResponse> {
    get(pool, caller, &SEEKER).await
}

pub async fn put_seeker(
    pool: &PgPool,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    put(pool, caller, &SEEKER, request).await
}

/// Sets a provider's `is_active` (created inactive-with-no-position if missing).
pub async fn set_provider_active(
    tx: &mut sqlx::PgConnection,
    provider_id: &str,
    active: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO provider_status (user_id, is_active) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET is_active = EXCLUDED.is_active, updated_at = now()",
    )
    .bind(provider_id)
    .bind(active)
    .execute(tx)
    .await?;
    Ok(())
}

/// Sets a seeker's `is_searching`.
pub async fn set_seeker_searching(
    tx: &mut sqlx::PgConnection,
    seeker_id: &str,
    searching: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO seeker_search (user_id, is_searching) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET is_searching = EXCLUDED.is_searching, updated_at = now()",
    )
    .bind(seeker_id)
    .bind(searching)
    .execute(tx)
    .await?;
    Ok(())
}
