//! Development mode (`GATEWAY_DEV_MODE=1`, off by default): development-only plumbing for the
//! demo page, none of it part of the product. With the mode off these routes do not exist.
//!
//! - `POST /dev/token` mints demo tokens. Real deployments bring their own tokens.
//! - `POST /dev/webhooks` is a webhook receiver (contract section 13) standing in for the
//!   operator's push backend, so that what a push would have said is visible in the browser:
//!   `scripts/stack.sh` points the notify worker's `WEBHOOK_URL` here. It verifies the Standard
//!   Webhooks signature with the gateway's `WEBHOOK_SECRET` (`shared::webhooks`, the code notify
//!   signs with), de-duplicates by `webhook-id` and keeps the last [`PER_RECIPIENT`] events per
//!   recipient in this process's memory only: a restart forgets them, and with several gateways
//!   each holds the ones it received. `dispute.opened` (no user) is kept for every mediator.
//! - `GET /dev/notifications` lists the caller's (token-authenticated) kept events, newest first.
//!
//! A real receiver (the operator's backend, README "Webhooks") sends the push instead.

use crate::SharedState;
use crate::auth::authenticate;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::auth::{Role, is_valid_user_id};
use shared::webhooks::Signer;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

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

/// Events kept per recipient (older ones are dropped).
pub const PER_RECIPIENT: usize = 100;
/// Recipients kept; past it, the one whose latest event is oldest is forgotten.
const MAX_RECIPIENTS: usize = 1000;
/// `webhook-id`s remembered for de-duplication (a retry comes within hours, but this is a demo).
const MAX_SEEN_IDS: usize = 10_000;

/// Who an event is for: a user of a role, or (`None`) every user of the role (`dispute.opened`
/// goes to all mediators).
type Recipient = (Role, Option<String>);

/// One received event, as `GET /dev/notifications` lists it.
#[derive(Clone, Serialize)]
pub struct Notification {
    webhook_id: String,
    #[serde(rename = "type")]
    event_type: String,
    timestamp: String,
    data: Value,
    /// Arrival order, to merge a mediator's own and shared lists.
    #[serde(skip)]
    arrival: u64,
}

/// The body notify sends (contract section 13).
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    event_type: String,
    timestamp: String,
    data: Value,
}

#[derive(Default)]
struct Kept {
    by_recipient: HashMap<Recipient, VecDeque<Notification>>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    arrivals: u64,
}

/// The development receiver's verification key and memory.
pub struct Inbox {
    /// None: `WEBHOOK_SECRET` is not set, the receiver refuses with 503.
    signer: Option<Signer>,
    kept: Mutex<Kept>,
}

impl Inbox {
    pub fn new(signer: Option<Signer>) -> Inbox {
        Inbox {
            signer,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// Whether webhooks are refused for want of a secret.
    pub fn refuses(&self) -> bool {
        self.signer.is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keeps an event unless its `webhook-id` was seen; false for a duplicate.
    fn keep(&self, recipient: Recipient, webhook_id: &str, event: Event) -> bool {
        let mut kept = self.lock();
        if !kept.seen.insert(webhook_id.to_owned()) {
            return false;
        }
        kept.seen_order.push_back(webhook_id.to_owned());
        while kept.seen_order.len() > MAX_SEEN_IDS {
            if let Some(oldest) = kept.seen_order.pop_front() {
                kept.seen.remove(&oldest);
            }
        }
        kept.arrivals += 1;
        let notification = Notification {
            webhook_id: webhook_id.to_owned(),
            event_type: event.event_type,
            timestamp: event.timestamp,
            data: event.data,
            arrival: kept.arrivals,
        };
        if !kept.by_recipient.contains_key(&recipient) && kept.by_recipient.len() >= MAX_RECIPIENTS
        {
            let stalest = kept
                .by_recipient
                .iter()
                .min_by_key(|(_, list)| list.front().map_or(0, |latest| latest.arrival))
                .map(|(recipient, _)| recipient.clone());
            if let Some(stalest) = stalest {
                kept.by_recipient.remove(&stalest);
            }
        }
        let list = kept.by_recipient.entry(recipient).or_default();
        list.push_front(notification);
        list.truncate(PER_RECIPIENT);
        true
    }

    /// What `user_id` in `role` was told, newest first: their own events and their role's shared
    /// ones.
    fn list(&self, role: Role, user_id: &str) -> Vec<Notification> {
        let kept = self.lock();
        let mut all: Vec<Notification> = [(role, Some(user_id.to_owned())), (role, None)]
            .iter()
            .filter_map(|recipient| kept.by_recipient.get(recipient))
            .flatten()
            .cloned()
            .collect();
        all.sort_by_key(|notification| std::cmp::Reverse(notification.arrival));
        all.truncate(PER_RECIPIENT);
        all
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// `POST /dev/webhooks`: verifies, de-duplicates and keeps one event. 204 when kept or already
/// kept (a retry), 401 for a bad signature or stale timestamp, 400 for a body that is no event,
/// 503 without `WEBHOOK_SECRET`.
pub async fn receive_webhook(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let inbox = &state.dev_inbox;
    let Some(signer) = &inbox.signer else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway has no WEBHOOK_SECRET: the development receiver cannot verify webhooks",
        );
    };
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let (Some(webhook_id), Some(timestamp), Some(signature)) = (
        header("webhook-id"),
        header("webhook-timestamp").and_then(|value| value.trim().parse::<i64>().ok()),
        header("webhook-signature"),
    ) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "webhook-id, webhook-timestamp and webhook-signature are required",
        );
    };
    let now = chrono::Utc::now().timestamp();
    if let Err(error) = signer.verify(webhook_id, timestamp, &body, signature, now) {
        tracing::warn!(%webhook_id, %error, "development receiver: webhook refused");
        return refuse(StatusCode::UNAUTHORIZED, &error.to_string());
    }
    let Ok(event) = serde_json::from_slice::<Event>(&body) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the body is not an event {type, timestamp, data}",
        );
    };
    let role = event
        .data
        .get("role")
        .and_then(Value::as_str)
        .and_then(Role::parse);
    let user_id = match event.data.get("user_id") {
        Some(Value::String(user_id)) => Some(user_id.clone()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "data.user_id must be a string or null",
            );
        }
    };
    let Some(role) = role else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "data.role must be seeker, provider or mediator",
        );
    };
    // Only a role's shared events (`dispute.opened` to mediators) name no user.
    if user_id.is_none() && role != Role::Mediator {
        return refuse(
            StatusCode::BAD_REQUEST,
            "data.user_id is null for a single user's event",
        );
    }
    let kept = inbox.keep((role, user_id), webhook_id, event);
    tracing::debug!(%webhook_id, kept, "development receiver: webhook received");
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /dev/notifications`: the caller's kept events, `{notifications: [...]}`, newest first.
pub async fn notifications(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let identity = match authenticate(&state.verifier, &headers, &query, None) {
        Ok(identity) => identity,
        Err(refusal) => return refusal.into_response(),
    };
    Json(serde_json::json!({
        "notifications": state.dev_inbox.list(identity.role, &identity.user_id),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str) -> Event {
        Event {
            event_type: event_type.to_owned(),
            timestamp: String::from("2025-01-01T00:00:00Z"),
            data: Value::Null,
        }
    }

    #[test]
    fn events_are_kept_per_recipient_once_newest_first_and_bounded() {
        let inbox = Inbox::new(None);
        let provider = (Role::Provider, Some(String::from("p1")));
        assert!(inbox.keep(provider.clone(), "msg_1", event("work.assigned")));
        assert!(!inbox.keep(provider.clone(), "msg_1", event("work.assigned")));
        assert!(inbox.keep(provider.clone(), "msg_2", event("session.ended")));
        let listed: Vec<String> = inbox
            .list(Role::Provider, "p1")
            .into_iter()
            .map(|n| n.webhook_id)
            .collect();
        assert_eq!(listed, ["msg_2", "msg_1"]);
        assert!(inbox.list(Role::Seeker, "p1").is_empty());
        assert!(inbox.list(Role::Provider, "p2").is_empty());
        for i in 0..(PER_RECIPIENT + 5) {
            inbox.keep(
                provider.clone(),
                &format!("msg_more_{i}"),
                event("work.assigned"),
            );
        }
        assert_eq!(inbox.list(Role::Provider, "p1").len(), PER_RECIPIENT);
    }

    #[test]
    fn a_dispute_is_shown_to_every_mediator() {
        let inbox = Inbox::new(None);
        inbox.keep((Role::Mediator, None), "msg_d", event("dispute.opened"));
        assert_eq!(inbox.list(Role::Mediator, "m1").len(), 1);
        assert_eq!(inbox.list(Role::Mediator, "m2").len(), 1);
        assert!(inbox.list(Role::Seeker, "m1").is_empty());
    }

    #[test]
    fn recipients_are_bounded() {
        let inbox = Inbox::new(None);
        for i in 0..(MAX_RECIPIENTS + 10) {
            inbox.keep(
                (Role::Seeker, Some(format!("s{i}"))),
                &format!("msg_{i}"),
                event("work.answered"),
            );
        }
        assert_eq!(inbox.lock().by_recipient.len(), MAX_RECIPIENTS);
        // The oldest went first.
        assert!(inbox.list(Role::Seeker, "s0").is_empty());
        assert_eq!(
            inbox
                .list(Role::Seeker, &format!("s{}", MAX_RECIPIENTS + 9))
                .len(),
            1
        );
    }
}
