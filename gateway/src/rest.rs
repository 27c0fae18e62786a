//! Serving the REST routes of contract section 3 (declared in `routes.rs`): each call's token and
//! role are checked, then the call is forwarded as a NATS request on `api.<resource>.<verb>` to
//! the worker that owns it and the answer is turned back into HTTP. Ids in paths are checked here
//! so that malformed ones never travel.

use crate::SharedState;
use crate::auth::{authenticate, authenticate_acting};
use crate::routes::{Method, ROUTES, Route};
use axum::body::Bytes;
use axum::extract::{Query, RawPathParams, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use shared::api::{ApiRequest, ApiResponse};
use shared::headers;
use std::collections::BTreeMap;

type QueryMap = Query<BTreeMap<String, String>>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// An answer the caller should repeat after `after` (429, 503), with `Retry-After` in whole
/// seconds.
fn retry_later(status: StatusCode, message: &str, after: std::time::Duration) -> Response {
    let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = error(status, message);
    if let Ok(value) = axum::http::HeaderValue::from_str(&seconds.to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
fn declares_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// How long a caller told "unavailable" should wait before trying again.
const RETRY_UNAVAILABLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Every route of the table, served: each call is checked and forwarded by [`serve`].
pub fn router() -> Router<SharedState> {
    ROUTES.iter().fold(Router::new(), |router, route| {
        let handler = move |State(state): State<SharedState>,
                            headers: HeaderMap,
                            Query(query): QueryMap,
                            path: RawPathParams,
                            body: Bytes| async move {
            let id = path.iter().next().map(|(_, id)| id.to_owned());
            serve(route, &state, &headers, query, id, body).await
        };
        router.route(
            route.path,
            match route.method {
                Method::Get => get(handler),
                Method::Put => put(handler),
                Method::Post => post(handler),
            },
        )
    })
}

/// Authenticates the caller for `route`, checks the path id and the body's declared type, then
/// sends the call to the route's subject and relays the answer.
async fn serve(
    route: &'static Route,
    state: &SharedState,
    http_headers: &HeaderMap,
    mut query: BTreeMap<String, String>,
    id: Option<String>,
    body: Bytes,
) -> Response {
    let identity = if route.reads() {
        authenticate(&state.verifier, http_headers, &query, route.role)
    } else {
        authenticate_acting(
            &state.verifier,
            http_headers,
            &query,
            route.role,
            &state.config.cors_origins,
        )
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    if let (Some(path_id), Some(id)) = (&route.id, &id)
        && !path_id.accepts(id)
    {
        return error(
            StatusCode::NOT_FOUND,
            &format!("{} not found", path_id.resource),
        );
    }
    // Only a route that takes a body reads one. A body that is not declared JSON is refused
    // before anything reads it: a cross-site form or `text/plain` request (which needs no
    // preflight) cannot pass for an API call.
    let body = if route.request.is_some() && !body.is_empty() {
        if !declares_json(http_headers) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be Content-Type: application/json",
            );
        }
        Some(body)
    } else {
        None
    };
    query.remove("token");
    if let Err(wait) = state.rest_limit.take(&identity.user_id) {
        state.stats.rest_limited();
        return retry_later(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded", wait);
    }
    let body = match body {
        Some(bytes) => match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(_) => return error(StatusCode::BAD_REQUEST, "invalid JSON"),
        },
        None => None,
    };
    let request = ApiRequest { id, query, body };
    let payload = match serde_json::to_vec(&request) {
        Ok(payload) => payload,
        Err(_) => return error(StatusCode::BAD_REQUEST, "invalid request"),
    };
    match request_worker(state, &identity, route.subject, payload).await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, Json(answer.body)).into_response();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
            }
            response
        }
        Err(refusal) => refusal,
    }
}

/// Sends a REST call to its worker as the caller and returns the worker's answer, or the HTTP
/// answer for a worker that is not there.
async fn request_worker(
    state: &SharedState,
    identity: &shared::auth::Identity,
    subject: &'static str,
    payload: Vec<u8>,
) -> Result<ApiResponse, Response> {
    let mut nats_headers = async_nats::HeaderMap::new();
    nats_headers.insert(headers::USER_ID, identity.user_id.as_str());
    nats_headers.insert(headers::ROLE, identity.role.as_str());
    let trace_id = uuid::Uuid::new_v4().to_string();
    nats_headers.insert(headers::TRACE_ID, trace_id.as_str());
    if let Some(name) = &identity.name {
        nats_headers.insert(headers::USER_NAME, name.as_str());
    }
    let reply = state
        .nats
        .request_with_headers(subject, nats_headers, payload.into())
        .await;
    match reply {
        Ok(message) => serde_json::from_slice::<ApiResponse>(&message.payload)
            .map_err(|_| error(StatusCode::BAD_GATEWAY, "malformed answer from a worker")),
        Err(failure) => {
            tracing::warn!(subject, error = %failure, "REST forward failed");
            Err(match failure.kind() {
                // Workers that cannot serve a call within 5 s are overloaded or gone: the call
                // is worth repeating, not a gateway fault (contract section 12).
                async_nats::RequestErrorKind::TimedOut => retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the service did not answer in time, please retry",
                    RETRY_UNAVAILABLE,
                ),
                _ => retry_later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service unavailable, please retry",
                    RETRY_UNAVAILABLE,
                ),
            })
        }
    }
}

/// Asks the worker owning `subject` about the resource `id` as `identity` would over REST (the
/// dialects' handshakes: is this user part of that session?); the worker's answer.
pub async fn ask(
    state: &SharedState,
    identity: &shared::auth::Identity,
    subject: &'static str,
    id: &str,
) -> Result<ApiResponse, Response> {
    let request = ApiRequest {
        id: Some(id.to_owned()),
        query: BTreeMap::new(),
        body: None,
    };
    let payload = serde_json::to_vec(&request)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "invalid request"))?;
    request_worker(state, identity, subject, payload).await
}
