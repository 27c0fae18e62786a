//! Authentication of REST calls and WebSocket upgrades: a JWT from `Authorization: Bearer`,
//! `?token=` or a `token` cookie (contract section 11: the neighbouring systems' web clients send
//! one), 401 when missing or invalid, 403 when the role does not fit the endpoint.
//!
//! A cookie is ambient: the browser sends it with requests any web page makes. A request that acts
//! (a socket upgrade, a Socket.IO handshake, a REST call other than a read) and is authenticated
//! by the cookie alone must therefore come from the gateway's own origin or one of
//! `GATEWAY_CORS_ORIGINS` (contract section 12); otherwise 403 and nothing happens.

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
    /// The cookie authenticated a request that acts, from an origin that may not use it.
    ForeignOrigin,
}

impl Refusal {
    /// What the client is told.
    pub fn message(&self) -> String {
        match self {
            Refusal::Unauthorized(error) => error.to_string(),
            Refusal::Forbidden => String::from("this endpoint is not for your role"),
            Refusal::ForeignOrigin => String::from(
                "the token cookie is not accepted from this origin (send the token in Authorization)",
            ),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden | Refusal::ForeignOrigin => StatusCode::FORBIDDEN,
        };
        (status, Json(serde_json::json!({ "error": self.message() }))).into_response()
    }
}

/// Finds the token (header first, then `?token=`, then the cookie) and verifies it; `required` is the role the
/// endpoint is for, if any. For reads: a request that acts goes through [`authenticate_acting`].
pub fn authenticate(
    verifier: &shared::auth::TokenVerifier,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    required: Option<Role>,
) -> Result<Identity, Refusal> {
    let (token, _) = find_token(headers, query)?;
    let identity = verifier.verify(token).map_err(Refusal::Unauthorized)?;
    match required {
        Some(role) if role != identity.role => Err(Refusal::Forbidden),
        _ => Ok(identity),
    }
}

/// As [`authenticate`], for a request that acts (an upgrade, a handshake, a write): when only the
/// cookie carries the token, the request's `Origin` must be the gateway's own (the host it was
/// sent to) or one of `allowed_origins`.
pub fn authenticate_acting(
    verifier: &shared::auth::TokenVerifier,
    headers: &HeaderMap,
    query: &BTreeMap<String, String>,
    required: Option<Role>,
    allowed_origins: &[String],
) -> Result<Identity, Refusal> {
    let (_, from_cookie) = find_token(headers, query)?;
    if from_cookie && !origin_allowed(headers, allowed_origins) {
        metrics::counter!("gateway_foreign_origin_refusals_total").increment(1);
        return Err(Refusal::ForeignOrigin);
    }
    authenticate(verifier, headers, query, required)
}

/// The token, and whether it came from the cookie (no header and no `?token=` carried one).
fn find_token<'a>(
    headers: &'a HeaderMap,
    query: &'a BTreeMap<String, String>,
) -> Result<(&'a str, bool), Refusal> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or(value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty());
    let from_query = query
        .get("token")
        .map(String::as_str)
        .filter(|token| !token.is_empty());
    if let Some(token) = from_header.or(from_query) {
        return Ok((token, false));
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| cookie.trim().strip_prefix("token="))
        .filter(|token| !token.is_empty())
        .map(|token| (token, true))
        .ok_or(Refusal::Unauthorized(AuthError::Missing))
}

/// Whether the request's `Origin` is the gateway's own (scheme aside: the same host and port it
/// was sent to) or listed. No `Origin` at all is not allowed: browsers send one with every
/// upgrade and every cross-site write, and only a browser sends the cookie on its own.
pub fn origin_allowed(headers: &HeaderMap, allowed_origins: &[String]) -> bool {
    let Some(origin) = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    if allowed_origins
        .iter()
        .any(|allowed| allowed.trim_end_matches('/') == origin)
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    matches!((host, origin_host), (Some(host), Some(origin_host)) if host.eq_ignore_ascii_case(origin_host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(name.clone(), HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn only_the_gateways_own_or_a_listed_origin_may_use_the_cookie() {
        let listed = vec![String::from("https://chat.example")];
        let own = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ]);
        assert!(origin_allowed(&own, &listed));
        let partner = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://chat.example"),
        ]);
        assert!(origin_allowed(&partner, &listed));
        let foreign = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(!origin_allowed(&foreign, &listed));
        let other_port = headers(&[
            (header::HOST, "127.0.0.1:8080"),
            (header::ORIGIN, "http://127.0.0.1:9999"),
        ]);
        assert!(!origin_allowed(&other_port, &listed));
        let none = headers(&[(header::HOST, "127.0.0.1:8080")]);
        assert!(!origin_allowed(&none, &listed));
        let null = headers(&[(header::HOST, "127.0.0.1:8080"), (header::ORIGIN, "null")]);
        assert!(!origin_allowed(&null, &listed));
    }
}
