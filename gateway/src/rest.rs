//! The REST routes of contract section 3. Each checks the token and the role, then forwards the
//! call as a NATS request on `api.<resource>.<verb>` to the worker that owns it and turns the
//! answer back into HTTP. Ids in paths are checked here so that malformed ones never travel.

use crate::SharedState;
use crate::auth::{authenticate, authenticate_acting};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::api::{ApiRequest, ApiResponse};
use shared::auth::Role;
use shared::headers;
use shared::subjects::api;
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

/// Authenticates, then sends the request to `subject` and relays the answer.
async fn forward(
    state: &SharedState,
    http_headers: &HeaderMap,
    mut query: BTreeMap<String, String>,
    role: Option<Role>,
    subject: &'static str,
    id: Option<String>,
    body: Option<Bytes>,
) -> Response {
    // Reads (`.get`, `.list`) may be authenticated by the cookie from anywhere (a browser does
    // not let a foreign page read the answer); anything that acts may not.
    let reads = subject.ends_with(".get") || subject.ends_with(".list");
    let identity = if reads {
        authenticate(&state.verifier, http_headers, &query, role)
    } else {
        authenticate_acting(
            &state.verifier,
            http_headers,
            &query,
            role,
            &state.config.cors_origins,
        )
    };
    let identity = match identity {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    // A body that is not declared JSON is refused before anything reads it: a cross-site form
    // or `text/plain` request (which needs no preflight) cannot pass for an API call.
    if body.as_ref().is_some_and(|bytes| !bytes.is_empty()) && !declares_json(http_headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be Content-Type: application/json",
        );
    }
    query.remove("token");
    if let Err(wait) = state.rest_limit.take(&identity.user_id) {
        state.stats.rest_limited();
        return retry_later(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded", wait);
    }
    let body = match body {
        Some(bytes) if !bytes.is_empty() => match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(_) => return error(StatusCode::BAD_REQUEST, "invalid JSON"),
        },
        _ => None,
    };
    let request = ApiRequest { id, query, body };
    let payload = match serde_json::to_vec(&request) {
        Ok(payload) => payload,
        Err(_) => return error(StatusCode::BAD_REQUEST, "invalid request"),
    };
    match request_worker(state, &identity, subject, payload).await {
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

#[utoipa::path(
    get,
    path = "/api/me/profile",
    tag = "profile",
    summary = "The caller's profile (created by the first call)",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "{name, mobile, profile_pic}", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
    )
)]
pub async fn get_profile(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
) -> Response {
    forward(&state, &headers, query, None, api::PROFILE_GET, None, None).await
}

#[utoipa::path(
    put,
    path = "/api/me/profile",
    tag = "profile",
    summary = "Store the caller's profile",
    security(("bearer" = [])),
    request_body = crate::docs::ProfileBody,
    responses(
        (status = 415, description = "the body is not declared `Content-Type: application/json`", body = crate::docs::ErrorBody),
        (status = 200, description = "the stored profile", body = Object),
        (status = 400, description = "the body is not JSON", body = crate::docs::ErrorBody),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn put_profile(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    body: Bytes,
) -> Response {
    forward(
        &state,
        &headers,
        query,
        None,
        api::PROFILE_PUT,
        None,
        Some(body),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/provider/status",
    tag = "statuses",
    summary = "A provider's availability",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "{is_active, latitude, longitude}", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 403, description = "the token's role does not fit", body = crate::docs::ErrorBody),
    )
)]
pub async fn get_provider_status(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
) -> Response {
    forward(
        &state,
        &headers,
        query,
        Some(Role::Provider),
        api::PROVIDER_STATUS_GET,
        None,
        None,
    )
    .await
}

#[utoipa::path(
    put,
    path = "/api/provider/status",
    tag = "statuses",
    summary = "Set a provider's availability",
    security(("bearer" = [])),
    request_body = crate::docs::ProviderStatusBody,
    responses(
        (status = 415, description = "the body is not declared `Content-Type: application/json`", body = crate::docs::ErrorBody),
        (status = 200, description = "the stored status", body = Object),
        (status = 400, description = "the body is not JSON", body = crate::docs::ErrorBody),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 403, description = "the token's role does not fit", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn put_provider_status(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    body: Bytes,
) -> Response {
    forward(
        &state,
        &headers,
        query,
        Some(Role::Provider),
        api::PROVIDER_STATUS_PUT,
        None,
        Some(body),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/seeker/search",
    tag = "statuses",
    summary = "A seeker's search status",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "{is_searching, latitude, longitude}", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 403, description = "the token's role does not fit", body = crate::docs::ErrorBody),
    )
)]
pub async fn get_seeker_search(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
) -> Response {
    forward(
        &state,
        &headers,
        query,
        Some(Role::Seeker),
        api::SEEKER_SEARCH_GET,
        None,
        None,
    )
    .await
}

#[utoipa::path(
    put,
    path = "/api/seeker/search",
    tag = "statuses",
    summary = "Set a seeker's search status",
    security(("bearer" = [])),
    request_body = crate::docs::SeekerSearchBody,
    responses(
        (status = 415, description = "the body is not declared `Content-Type: application/json`", body = crate::docs::ErrorBody),
        (status = 200, description = "the stored status", body = Object),
        (status = 400, description = "the body is not JSON", body = crate::docs::ErrorBody),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 403, description = "the token's role does not fit", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn put_seeker_search(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    body: Bytes,
) -> Response {
    forward(
        &state,
        &headers,
        query,
        Some(Role::Seeker),
        api::SEEKER_SEARCH_PUT,
        None,
        Some(body),
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/work-orders",
    tag = "work orders",
    summary = "A seeker asks a provider for help",
    security(("bearer" = [])),
    request_body = crate::docs::WorkOrderBody,
    responses(
        (status = 415, description = "the body is not declared `Content-Type: application/json`", body = crate::docs::ErrorBody),
        (status = 201, description = "{work_id, status: pending}", body = Object),
        (status = 400, description = "the body is not JSON", body = crate::docs::ErrorBody),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 403, description = "the token's role does not fit", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
        (status = 409, description = "conflicts with the current state", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn create_work_order(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    body: Bytes,
) -> Response {
    forward(
        &state,
        &headers,
        query,
        Some(Role::Seeker),
        api::WORK_ORDERS_CREATE,
        None,
        Some(body),
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/work-orders/{work_id}",
    tag = "work orders",
    summary = "A work order, for its seeker or provider",
    security(("bearer" = [])),
    params(("work_id" = i64, Path, description = "a work order id")),
    responses(
        (status = 200, description = "{work_id, status, session_id, service_type, created_at}", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
    )
)]
pub async fn get_work_order(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(work_id): Path<String>,
) -> Response {
    if let Err(refusal) = authenticate(&state.verifier, &headers, &query, None) {
        return refusal.into_response();
    }
    if work_id.parse::<i64>().is_err() {
        return error(StatusCode::NOT_FOUND, "work order not found");
    }
    forward(
        &state,
        &headers,
        query,
        None,
        api::WORK_ORDERS_GET,
        Some(work_id),
        None,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}",
    tag = "sessions",
    summary = "The session's snapshot, for its participants",
    security(("bearer" = [])),
    params(("session_id" = String, Path, description = "a session id (UUID)")),
    responses(
        (status = 200, description = "the snapshot (contract section 3, with presence)", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
    )
)]
pub async fn get_session(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(session_id): Path<String>,
) -> Response {
    let subject = api::SESSIONS_GET;
    forward_by_uuid(
        &state, &headers, query, None, subject, session_id, None, "session",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/sessions/{session_id}/messages",
    tag = "sessions",
    summary = "Chat history, newest page first",
    security(("bearer" = [])),
    params(("session_id" = String, Path, description = "a session id (UUID)"), ("limit" = Option<i64>, Query, description = "1..200, default 50"), ("before" = Option<i64>, Query, description = "only messages with a lower seq")),
    responses(
        (status = 200, description = "{messages, has_more}", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn list_messages(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(session_id): Path<String>,
) -> Response {
    let subject = api::MESSAGES_LIST;
    forward_by_uuid(
        &state, &headers, query, None, subject, session_id, None, "session",
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/sessions/{session_id}/read",
    tag = "sessions",
    summary = "Mark the other parties' messages read up to a seq",
    security(("bearer" = [])),
    params(("session_id" = String, Path, description = "a session id (UUID)")),
    request_body = crate::docs::ReadBody,
    responses(
        (status = 415, description = "the body is not declared `Content-Type: application/json`", body = crate::docs::ErrorBody),
        (status = 200, description = "{session_id, up_to_seq, unread_count}", body = Object),
        (status = 400, description = "the body is not JSON", body = crate::docs::ErrorBody),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn read_up_to(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Response {
    let subject = api::SESSIONS_READ;
    forward_by_uuid(
        &state,
        &headers,
        query,
        None,
        subject,
        session_id,
        Some(body),
        "session",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/conversations",
    tag = "sessions",
    summary = "The caller's inbox, most recent activity first",
    security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, description = "1..100, default 20"), ("before" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses(
        (status = 200, description = "{conversations, next_cursor}", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn list_conversations(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
) -> Response {
    forward(
        &state,
        &headers,
        query,
        None,
        api::CONVERSATIONS_LIST,
        None,
        None,
    )
    .await
}

/// Forwards a call on a resource named by a UUID in the path (404 for anything else).
#[allow(clippy::too_many_arguments)]
async fn forward_by_uuid(
    state: &SharedState,
    headers: &HeaderMap,
    query: BTreeMap<String, String>,
    role: Option<Role>,
    subject: &'static str,
    id: String,
    body: Option<Bytes>,
    what: &str,
) -> Response {
    if let Err(refusal) = authenticate(&state.verifier, headers, &query, role) {
        return refusal.into_response();
    }
    if uuid::Uuid::parse_str(&id).is_err() {
        return error(StatusCode::NOT_FOUND, &format!("{what} not found"));
    }
    forward(state, headers, query, role, subject, Some(id), body).await
}

#[utoipa::path(
    post,
    path = "/api/sessions/{session_id}/dispute",
    tag = "disputes",
    summary = "A party opens a dispute",
    security(("bearer" = [])),
    params(("session_id" = String, Path, description = "a session id (UUID)")),
    request_body = crate::docs::DisputeBody,
    responses(
        (status = 415, description = "the body is not declared `Content-Type: application/json`", body = crate::docs::ErrorBody),
        (status = 201, description = "the dispute", body = Object),
        (status = 400, description = "the body is not JSON", body = crate::docs::ErrorBody),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
        (status = 409, description = "conflicts with the current state", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn open_dispute(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Response {
    let subject = api::DISPUTES_OPEN;
    forward_by_uuid(
        &state,
        &headers,
        query,
        None,
        subject,
        session_id,
        Some(body),
        "session",
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/disputes",
    tag = "disputes",
    summary = "Disputes in a state (mediators)",
    security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "open (default), joined or resolved")),
    responses(
        (status = 200, description = "{disputes}", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 403, description = "the token's role does not fit", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn list_disputes(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
) -> Response {
    let role = Some(Role::Mediator);
    forward(
        &state,
        &headers,
        query,
        role,
        api::DISPUTES_LIST,
        None,
        None,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/disputes/{dispute_id}",
    tag = "disputes",
    summary = "A dispute, for its parties and its mediator",
    security(("bearer" = [])),
    params(("dispute_id" = String, Path, description = "a dispute id (UUID)")),
    responses(
        (status = 200, description = "the dispute", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
    )
)]
pub async fn get_dispute(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(dispute_id): Path<String>,
) -> Response {
    let subject = api::DISPUTES_GET;
    forward_by_uuid(
        &state, &headers, query, None, subject, dispute_id, None, "dispute",
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/disputes/{dispute_id}/join",
    tag = "disputes",
    summary = "The first mediator to join becomes a participant",
    security(("bearer" = [])),
    params(("dispute_id" = String, Path, description = "a dispute id (UUID)")),
    responses(
        (status = 200, description = "the dispute", body = Object),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 403, description = "the token's role does not fit", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
        (status = 409, description = "conflicts with the current state", body = crate::docs::ErrorBody),
    )
)]
pub async fn join_dispute(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(dispute_id): Path<String>,
) -> Response {
    let (role, subject) = (Some(Role::Mediator), api::DISPUTES_JOIN);
    forward_by_uuid(
        &state, &headers, query, role, subject, dispute_id, None, "dispute",
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/disputes/{dispute_id}/resolve",
    tag = "disputes",
    summary = "Its mediator resolves the dispute",
    security(("bearer" = [])),
    params(("dispute_id" = String, Path, description = "a dispute id (UUID)")),
    request_body = crate::docs::ResolutionBody,
    responses(
        (status = 415, description = "the body is not declared `Content-Type: application/json`", body = crate::docs::ErrorBody),
        (status = 200, description = "the dispute", body = Object),
        (status = 400, description = "the body is not JSON", body = crate::docs::ErrorBody),
        (status = 401, description = "missing, malformed, badly signed or expired token", body = crate::docs::ErrorBody),
        (status = 429, description = "over the caller's REST rate limit; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 503, description = "the workers cannot serve the call now; `Retry-After` says when to try again", body = crate::docs::ErrorBody),
        (status = 403, description = "the token's role does not fit", body = crate::docs::ErrorBody),
        (status = 404, description = "not found, or not yours (the same answer)", body = crate::docs::ErrorBody),
        (status = 409, description = "conflicts with the current state", body = crate::docs::ErrorBody),
        (status = 422, description = "invalid input", body = crate::docs::ErrorBody),
    )
)]
pub async fn resolve_dispute(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(dispute_id): Path<String>,
    body: Bytes,
) -> Response {
    let (role, subject) = (Some(Role::Mediator), api::DISPUTES_RESOLVE);
    forward_by_uuid(
        &state,
        &headers,
        query,
        role,
        subject,
        dispute_id,
        Some(body),
        "dispute",
    )
    .await
}
