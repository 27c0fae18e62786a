//! Authentication of REST calls and WebSocket upgrades: a JWT from `Authorization: Bearer`,
//! `?token=` or a `token` cookie (contract section 11: the neighbouring systems' web clients send
//! one), 401 when missing or invalid, 403 when the role does not fit the endpoint.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use shared::auth::{AuthError, Identity, Role};
use std::collections::BTreeMap;

/// Why a request was refused before it reached NATS.
#[derive(Debug)]
pub enum Refusal {
    Unauthorized(AuthError),
    Forbidden,
}

impl Refusal {
    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            Refusal::Unauthorized(error) => error.to_string(),
            Refusal::Forbidden => String::from("this endpoint is not for your role"),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
        };
        (status, Json(serde_json::json!({ "error": self.message() }))).into_response()
    }
}

/// Finds the token (header first, then `?token=`, then the cookie) and verifies it; `required` is the role the
/// endpoint is for, if any.
pub fn authenticate(
    verifier: &shared::auth::TokenVerifier,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    required: Option<Role>,
) -> Result<Identity, Refusal> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or(value.strip_prefix("bearer "))
        })
        .map(str::trim);
    let from_cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix("token="));
    let token = from_header
        .or(query.get("token").map(String::as_str))
        .or(from_cookie)
        .filter(|token| !token.is_empty())
        .ok_or(Refusal::Unauthorized(AuthError::Missing))?;
    let identity = verifier.verify(token).map_err(Refusal::Unauthorized)?;
    match required {
        Some(role) if role != identity.role => Err(Refusal::Forbidden),
        _ => Ok(identity),
    }
}
