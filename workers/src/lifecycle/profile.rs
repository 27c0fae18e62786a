//! `GET/PUT /api/me/profile`: `{name, mobile, profile_pic?}`; mobile is exactly 10 digits. A user
//! who never stored one reads `{name: <the token's name or null>, mobile: null, profile_pic: null}`.

use super::text;
use crate::api_server::Caller;
use shared::api::{ApiRequest, ApiResponse};
use shared::rest::{Profile, ProfileUpdate};
use sqlx::PgPool;

pub fn is_mobile(value: &str) -> bool {
    value.len() == 10 && value.bytes().all(|b| b.is_ascii_digit())
}

pub async fn get(pool: &PgPool, caller: &Caller) -> anyhow::Result<ApiResponse> {
    crate::users::record(pool, &caller.user_id, caller.role, caller.name.as_deref()).await?;
    let profile = sqlx::query_as::<_, Profile>(
        "SELECT name, mobile, profile_pic FROM profiles WHERE user_id = $1",
    )
    .bind(&caller.user_id)
    .fetch_optional(pool)
    .await?;
    // The first authenticated call creates the user (contract section 2): a user who never set a
    // profile has one, empty but for the token's name, rather than a 404 for their own data.
    let profile = profile.unwrap_or_else(|| Profile {
        name: caller.name.clone(),
        mobile: None,
        profile_pic: None,
    });
    Ok(ApiResponse::ok(profile))
}

pub async fn put(
    pool: &PgPool,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let body = match request.body.map(serde_json::from_value::<ProfileUpdate>) {
        Some(Ok(body)) => body,
        _ => {
            return Ok(ApiResponse::error(
                422,
                "expected {name, mobile, profile_pic?} with string values",
            ));
        }
    };
    // Before anything else: Postgres would refuse the row, and the caller must hear which field.
    if let Err(error) = text::refuse_nul_in(&[
        ("name", Some(body.name.as_str())),
        ("profile_pic", body.profile_pic.as_deref()),
    ]) {
        return Ok(ApiResponse::error(400, &error));
    }
    if body.name.trim().is_empty() || body.name.chars().count() > 100 {
        return Ok(ApiResponse::error(422, "name must be 1 to 100 characters"));
    }
    if !is_mobile(&body.mobile) {
        return Ok(ApiResponse::error(422, "mobile must be exactly 10 digits"));
    }
    crate::users::record(pool, &caller.user_id, caller.role, caller.name.as_deref()).await?;
    let profile = sqlx::query_as::<_, Profile>(
        "INSERT INTO profiles (user_id, name, mobile, profile_pic) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE SET name = EXCLUDED.name, mobile = EXCLUDED.mobile,
             profile_pic = EXCLUDED.profile_pic, updated_at = now()
         RETURNING name, mobile, profile_pic",
    )
    .bind(&caller.user_id)
    .bind(body.name.trim())
    .bind(&body.mobile)
    .bind(&body.profile_pic)
    .fetch_one(pool)
    .await?;
    Ok(ApiResponse::ok(profile))
}
