//! A webhook receiver for the tests (contract section 13): a real HTTP server on a free port that
//! records every request, checks its Standard Webhooks signature with the specification's
//! algorithm (written here again, independently of the notify worker's), and answers as the test
//! planned: 200 by default, or the statuses, `Retry-After`s and stalls queued with
//! [`Receiver::answer_next`].

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The secret the test stacks sign with (24 random bytes, base64).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Holds the request this long, then answers 200 (unless the sender gave up first).
    Stall(Duration),
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    pub content_type: String,
    pub body: Value,
    pub at: Instant,
    /// The same moment by the wall clock (to compare with the event's `timestamp`).
    pub at_wall: chrono::DateTime<chrono::Utc>,
    /// The status the receiver answered (a stall answers 200 if the sender still listens).
    pub status: u16,
    /// The signature matched and the timestamp was within five minutes of now.
    pub verified: bool,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    plan: VecDeque<Reply>,
    /// Every n-th request answers 500 (0: never), for the benchmark.
    fail_every: usize,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Starts the server (it lives as long as the test's runtime).
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the receiver");
        let address = listener.local_addr().expect("the receiver's address");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{address}/hooks"),
            inner,
        }
    }

    /// The next requests get these answers, in order (then 200 again).
    pub fn answer_next(&self, replies: &[Reply]) {
        self.lock().plan.extend(replies.iter().cloned());
    }

    /// From now on every `n`-th request (without a planned answer) gets a 500.
    pub fn fail_every(&self, n: usize) {
        self.lock().fail_every = n;
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// The requests of one event type so far.
    pub fn of_type(&self, event_type: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|received| received.event_type() == event_type)
            .collect()
    }

    /// Waits until `count` requests of `event_type` arrived (panics after `within`).
    pub async fn wait_for(
        &self,
        event_type: &str,
        count: usize,
        within: Duration,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let found = self.of_type(event_type);
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{count} {event_type} webhook(s) within {within:?}; got {:?}",
                self.received()
                    .iter()
                    .map(|r| r.body.clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the first `event_type` request.
    pub async fn first(&self, event_type: &str, within: Duration) -> Received {
        self.wait_for(event_type, 1, within).await.remove(0)
    }

    /// Asserts no `event_type` request arrives within `wait`.
    pub async fn expect_none(&self, event_type: &str, wait: Duration) {
        tokio::time::sleep(wait).await;
        let found = self.of_type(event_type);
        assert!(
            found.is_empty(),
            "no {event_type} webhook expected: {found:?}"
        );
    }

    /// Asserts no more than `count` requests of `event_type` have arrived after `wait`.
    pub async fn expect_none_after(&self, event_type: &str, count: usize, wait: Duration) {
        tokio::time::sleep(wait).await;
        let found = self.of_type(event_type);
        assert!(
            found.len() <= count,
            "at most {count} {event_type} webhook(s) expected: {:?}",
            found.iter().map(|r| r.body.clone()).collect::<Vec<_>>()
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let webhook_id = header("webhook-id");
    let timestamp = header("webhook-timestamp").parse::<i64>().unwrap_or(0);
    let signature = header("webhook-signature");
    let verified = verify(SECRET, &webhook_id, timestamp, &body, &signature);
    let mut received = Received {
        webhook_id,
        timestamp,
        signature,
        content_type: header("content-type"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
        at_wall: chrono::Utc::now(),
        status: 200,
        verified,
    };
    let reply = {
        let mut inner = inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut reply = inner.plan.pop_front();
        if reply.is_none()
            && inner.fail_every > 0
            && (inner.received.len() + 1).is_multiple_of(inner.fail_every)
        {
            reply = Some(Reply::Status(500));
        }
        received.status = match &reply {
            Some(Reply::Status(status)) | Some(Reply::RetryAfter(status, _)) => *status,
            None | Some(Reply::Stall(_)) => 200,
        };
        inner.received.push(received);
        reply
    };
    match reply {
        None | Some(Reply::Status(200)) => StatusCode::OK.into_response(),
        Some(Reply::Status(status)) => status_code(status).into_response(),
        Some(Reply::RetryAfter(status, seconds)) => {
            (status_code(status), [("retry-after", seconds.to_string())]).into_response()
        }
        Some(Reply::Stall(duration)) => {
            tokio::time::sleep(duration).await;
            StatusCode::OK.into_response()
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The Standard Webhooks verification: HMAC-SHA256 of `<id>.<timestamp>.<body>` keyed with the
/// base64-decoded secret, compared with each `v1,` entry of the header; the timestamp within
/// five minutes of now.
pub fn verify(secret: &str, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let Some(expected) = signature(secret, id, timestamp, body) else {
        return false;
    };
    let fresh = (chrono::Utc::now().timestamp() - timestamp).abs() <= 300;
    fresh
        && header
            .split(' ')
            .filter_map(|entry| entry.strip_prefix("v1,"))
            .any(|signature| signature == expected)
}

/// The base64 signature of one request (no `v1,`), as a sender computes it; None for a secret
/// that is not `whsec_<base64>`.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|encoded| STANDARD.decode(encoded).ok())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(STANDARD.encode(mac.finalize().into_bytes()))
}
