//! REST calls carried over NATS request/reply: the gateway turns an HTTP request into an
//! [`ApiRequest`] on `api.<resource>.<verb>` (identity in headers), and the owning worker's queue
//! group answers with an [`ApiResponse`] that the gateway turns back into HTTP.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ApiRequest {
    /// The id in the path (`work_id`, `session_id`), when the route has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

impl ApiRequest {
    /// The path id as a UUID (a session or a dispute), if it is one.
    pub fn uuid_id(&self) -> Option<uuid::Uuid> {
        self.id
            .as_deref()
            .and_then(|id| uuid::Uuid::parse_str(id).ok())
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
}

impl ApiResponse {
    pub fn ok(body: impl Serialize) -> ApiResponse {
        ApiResponse::with_status(200, body)
    }

    pub fn with_status(status: u16, body: impl Serialize) -> ApiResponse {
        match serde_json::to_value(body) {
            Ok(body) => ApiResponse { status, body },
            Err(error) => ApiResponse::error(500, &format!("cannot encode the answer: {error}")),
        }
    }

    /// `{"error": "..."}` with a 4xx/5xx status (contract section 3).
    pub fn error(status: u16, message: &str) -> ApiResponse {
        let body = crate::rest::ErrorBody {
            error: message.to_owned(),
        };
        ApiResponse {
            status,
            body: serde_json::json!(body),
        }
    }

    pub fn not_found(what: &str) -> ApiResponse {
        ApiResponse::error(404, &format!("{what} not found"))
    }
}
