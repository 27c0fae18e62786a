//! The bodies of every REST call (contract section 3), as Rust types. The worker that answers a
//! call builds its answer from these types and the gateway's OpenAPI document is generated from
//! them, so the document cannot drift from what is sent: a field added here is in both.
//!
//! Requests are what the workers parse; answers are what they serialize. Times are RFC 3339 UTC
//! strings (`shared::time::rfc3339`), ids of sessions, messages and disputes UUID strings and
//! work order ids integers.

use crate::auth::Role;
use crate::frames::Content;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// `{"error": "..."}`: every refusal's body, whatever its status.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// `PUT /api/me/profile`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfileUpdate {
    /// 1 to 100 characters.
    pub name: String,
    /// Exactly 10 digits.
    pub mobile: String,
    #[serde(default)]
    pub profile_pic: Option<String>,
}

/// The caller's profile (fields never set are null).
#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Profile {
    pub name: Option<String>,
    pub mobile: Option<String>,
    pub profile_pic: Option<String>,
}

/// `PUT /api/provider/status`: coordinates left out keep their stored values.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProviderStatusUpdate {
    pub is_active: bool,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
}

/// A provider's availability; one who never set it is inactive.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderStatus {
    pub is_active: bool,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// `PUT /api/seeker/search`: coordinates left out keep their stored values.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SeekerSearchUpdate {
    pub is_searching: bool,
    #[serde(default)]
    pub latitude: Option<f64>,
    #[serde(default)]
    pub longitude: Option<f64>,
}

/// A seeker's search status; one who never set it is not searching.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SeekerSearch {
    pub is_searching: bool,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// `POST /api/work-orders`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewWorkOrder {
    pub provider_id: String,
    pub service_type: String,
    #[serde(default)]
    pub message: Option<String>,
    pub latitude: f64,
    pub longitude: f64,
}

/// The answer to a new work order (`status` is always `pending`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkOrderCreated {
    pub work_id: i64,
    #[schema(example = "pending")]
    pub status: String,
}

/// A work order as its seeker and its provider see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkOrder {
    pub work_id: i64,
    /// pending, accepted, rejected, cancelled, completed or expired.
    pub status: String,
    /// The session it opened, once accepted.
    pub session_id: Option<Uuid>,
    pub service_type: String,
    pub created_at: String,
}

/// A page of chat history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<HistoryEntry>,
    /// Whether older messages exist (ask again with `before` = the first `seq`).
    pub has_more: bool,
}

/// A message as history shows it: its kind's fields beside `message`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub message_id: Uuid,
    pub seq: i64,
    /// seeker, provider, mediator or system.
    pub sender_type: String,
    pub message: String,
    /// sent, delivered or read.
    pub delivery_status: String,
    pub timestamp: String,
    #[serde(flatten)]
    pub content: Content,
}

/// `POST /api/sessions/{session_id}/read`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ReadUpTo {
    /// The highest `seq` read (a positive integer).
    pub up_to_seq: i64,
}

/// Where the caller's reading of a session stands after a `read` call.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReadPosition {
    pub session_id: Uuid,
    pub up_to_seq: i64,
    /// Messages of the others still unread by the caller.
    pub unread_count: i64,
}

/// A page of the caller's inbox, most recent activity first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    pub conversations: Vec<Conversation>,
    /// Pass as `before` for the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// One session in the inbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct Conversation {
    pub session_id: Uuid,
    pub work_id: i64,
    pub service_type: String,
    pub connection_state: String,
    pub my_role: Role,
    pub last_message: Option<LastMessage>,
    pub unread_count: i64,
    /// The session's latest dispute, if it had one.
    pub dispute: Option<DisputeSummary>,
    pub updated_at: String,
}

/// The latest message of a conversation, previewed.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastMessage {
    pub seq: i64,
    pub sender_type: String,
    pub kind: crate::frames::MessageKind,
    /// The first 100 characters, or `[location]` and the like.
    pub preview: String,
    pub timestamp: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeSummary {
    pub dispute_id: Uuid,
    pub status: String,
}

/// `POST /api/sessions/{session_id}/dispute`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewDispute {
    /// 1 to 1000 characters.
    pub reason: String,
}

/// `POST /api/disputes/{dispute_id}/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Resolution {
    /// 1 to 1000 characters.
    pub resolution: String,
}

/// A dispute as the API shows it: roles only, never the mediator's id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Dispute {
    pub dispute_id: Uuid,
    pub session_id: Uuid,
    /// open, joined or resolved.
    pub status: String,
    pub reason: String,
    /// The role of the party who opened it.
    pub opened_by: String,
    pub mediator_joined: bool,
    pub resolution: Option<String>,
    pub created_at: String,
    pub resolved_at: Option<String>,
}

/// `GET /api/disputes`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DisputeList {
    pub disputes: Vec<Dispute>,
}
