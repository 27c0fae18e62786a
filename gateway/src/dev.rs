//! Development mode (`GATEWAY_DEV_MODE=1`, off by default): the gateway mints demo tokens for the
//! web page at `POST /dev/token`. Real deployments bring their own tokens; with the mode off the
//! route does not exist.

use crate::SharedState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shared::auth::{Role, is_valid_user_id};

#[derive(Deserialize)]
pub struct TokenRequest {
    user_id: String,
    role: String,
    #[serde(default)]
    name: Option<String>,
}

pub async fn mint_token(
    State(state): State<SharedState>,
    Json(request): Json<TokenRequest>,
) -> Response {
    let Some(role) = Role::parse(&request.role) else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"error": "role must be seeker or provider"})),
        )
            .into_response();
    };
    if !is_valid_user_id(&request.user_id) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"error": "user_id must match [A-Za-z0-9_-]{1,64}"})),
        )
            .into_response();
    }
    match shared::auth::mint(
        &state.config.jwt.jwt_secret,
        &request.user_id,
        role,
        request.name.as_deref(),
        12 * 3600,
    ) {
        Ok(token) => Json(serde_json::json!({ "token": token })).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({"error": error.to_string()})),
        )
            .into_response(),
    }
}
