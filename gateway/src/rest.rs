//! The REST routes of contract section 3. Each checks the token and the role, then forwards the
//! call as a NATS request on `api.<resource>.<verb>` to the worker that owns it and turns the
//! answer back into HTTP. Ids in paths are checked here so that malformed ones never travel.

use crate::SharedState;
use crate::auth::authenticate;
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
    let identity = match authenticate(&state.verifier, http_headers, &query, role) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    query.remove("token");
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
            (status, Json(answer.body)).into_response()
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
                async_nats::RequestErrorKind::TimedOut => error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the service did not answer in time",
                ),
                _ => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service unavailable, please retry",
                ),
            })
        }
    }
}

/// Asks the worker owning `subject` about the resource `id` as `identity` would over REST (the
/// dialects' handshakes: is this user part of that session?); the answer's HTTP status.
pub async fn ask(
    state: &SharedState,
    identity: &shared::auth::Identity,
    subject: &'static str,
    id: &str,
) -> Result<u16, Response> {
    let request = ApiRequest {
        id: Some(id.to_owned()),
        query: BTreeMap::new(),
        body: None,
    };
    let payload = serde_json::to_vec(&request)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "invalid request"))?;
    request_worker(state, identity, subject, payload)
        .await
        .map(|answer| answer.status)
}

pub async fn get_profile(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
) -> Response {
    forward(&state, &headers, query, None, api::PROFILE_GET, None, None).await
}

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

pub async fn get_session(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(session_id): Path<String>,
) -> Response {
    if let Err(refusal) = authenticate(&state.verifier, &headers, &query, None) {
        return refusal.into_response();
    }
    if uuid::Uuid::parse_str(&session_id).is_err() {
        return error(StatusCode::NOT_FOUND, "session not found");
    }
    forward(
        &state,
        &headers,
        query,
        None,
        api::SESSIONS_GET,
        Some(session_id),
        None,
    )
    .await
}

pub async fn list_messages(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(session_id): Path<String>,
) -> Response {
    if let Err(refusal) = authenticate(&state.verifier, &headers, &query, None) {
        return refusal.into_response();
    }
    if uuid::Uuid::parse_str(&session_id).is_err() {
        return error(StatusCode::NOT_FOUND, "session not found");
    }
    forward(
        &state,
        &headers,
        query,
        None,
        api::MESSAGES_LIST,
        Some(session_id),
        None,
    )
    .await
}

pub async fn read_up_to(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): QueryMap,
    Path(session_id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(refusal) = authenticate(&state.verifier, &headers, &query, None) {
        return refusal.into_response();
    }
    if uuid::Uuid::parse_str(&session_id).is_err() {
        return error(StatusCode::NOT_FOUND, "session not found");
    }
    forward(
        &state,
        &headers,
        query,
        None,
        api::SESSIONS_READ,
        Some(session_id),
        Some(body),
    )
    .await
}

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
