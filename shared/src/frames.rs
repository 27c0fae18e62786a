//! The typed WebSocket frames of the whole contract: what clients send ([`ClientFrame`], named by
//! [`FrameKind`]) and what the server sends back ([`Event`]). Names and shapes follow the seed
//! protocol (`../shared/seeds/000_*.txt`); additions are only ever new fields or new types.
//!
//! Inbound fields whose bad values need a specific error text are kept as raw JSON values and
//! validated by the handler that owns them.

use crate::auth::Role;
use crate::subjects::Topic;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Every `type` a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Ping,
    WorkResponse,
    LocationUpdate,
    MediumSelection,
    MediumShare,
    StartChat,
    ChatMessage,
    MessageDelivered,
    MessageRead,
    TypingIndicator,
    CancelConnection,
    FinishService,
    Resume,
    MessagesRead,
    /// A new token for the socket, before the one it opened with expires (contract section 12).
    AuthRefresh,
}

/// Where the gateway sends a frame of a given kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Answered by the gateway itself (`ping`).
    Gateway,
    /// `work.<work_id>.response`.
    Work,
    /// `session.<session_id>.<topic>`.
    Session(Topic),
    /// `session.<session_id>.receipt` when the frame names its session, else
    /// `message.<message_id>.receipt`.
    Receipt,
}

impl FrameKind {
    pub fn from_name(name: &str) -> Option<FrameKind> {
        Some(match name {
            "ping" => FrameKind::Ping,
            "work_response" => FrameKind::WorkResponse,
            "location_update" => FrameKind::LocationUpdate,
            "medium_selection" => FrameKind::MediumSelection,
            "medium_share" => FrameKind::MediumShare,
            "start_chat" => FrameKind::StartChat,
            "chat_message" => FrameKind::ChatMessage,
            "message_delivered" => FrameKind::MessageDelivered,
            "message_read" => FrameKind::MessageRead,
            "typing_indicator" => FrameKind::TypingIndicator,
            "cancel_connection" => FrameKind::CancelConnection,
            "finish_service" => FrameKind::FinishService,
            "resume" => FrameKind::Resume,
            "messages_read" => FrameKind::MessagesRead,
            "auth_refresh" => FrameKind::AuthRefresh,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            FrameKind::Ping => "ping",
            FrameKind::WorkResponse => "work_response",
            FrameKind::LocationUpdate => "location_update",
            FrameKind::MediumSelection => "medium_selection",
            FrameKind::MediumShare => "medium_share",
            FrameKind::StartChat => "start_chat",
            FrameKind::ChatMessage => "chat_message",
            FrameKind::MessageDelivered => "message_delivered",
            FrameKind::MessageRead => "message_read",
            FrameKind::TypingIndicator => "typing_indicator",
            FrameKind::CancelConnection => "cancel_connection",
            FrameKind::FinishService => "finish_service",
            FrameKind::Resume => "resume",
            FrameKind::MessagesRead => "messages_read",
            FrameKind::AuthRefresh => "auth_refresh",
        }
    }

    /// Only providers answer work and share mediums; only seekers select mediums. A mediator
    /// (section 10) chats, types, reads and resumes, and nothing else.
    pub fn allowed_for(self, role: Role) -> bool {
        match self {
            FrameKind::WorkResponse | FrameKind::MediumShare => role == Role::Provider,
            FrameKind::MediumSelection => role == Role::Seeker,
            FrameKind::LocationUpdate
            | FrameKind::StartChat
            | FrameKind::CancelConnection
            | FrameKind::FinishService => role != Role::Mediator,
            FrameKind::Ping
            | FrameKind::AuthRefresh
            | FrameKind::ChatMessage
            | FrameKind::MessageDelivered
            | FrameKind::MessageRead
            | FrameKind::TypingIndicator
            | FrameKind::Resume
            | FrameKind::MessagesRead => true,
        }
    }

    pub fn route(self) -> Route {
        match self {
            FrameKind::Ping | FrameKind::AuthRefresh => Route::Gateway,
            FrameKind::WorkResponse => Route::Work,
            FrameKind::LocationUpdate => Route::Session(Topic::Location),
            FrameKind::MediumSelection | FrameKind::MediumShare => Route::Session(Topic::Mediums),
            FrameKind::StartChat
            | FrameKind::ChatMessage
            | FrameKind::Resume
            | FrameKind::MessagesRead => Route::Session(Topic::Chat),
            FrameKind::MessageDelivered | FrameKind::MessageRead => Route::Receipt,
            FrameKind::TypingIndicator => Route::Session(Topic::Typing),
            FrameKind::CancelConnection | FrameKind::FinishService => {
                Route::Session(Topic::Lifecycle)
            }
        }
    }
}

/// A client frame as the workers read it (the gateway has already checked `type`, the role and
/// the ids that go into the subject).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    WorkResponse {
        work_id: i64,
        #[serde(default)]
        accepted: Option<Value>,
    },
    LocationUpdate {
        session_id: Uuid,
        #[serde(default, alias = "lat")]
        latitude: Option<Value>,
        #[serde(default, alias = "lng")]
        longitude: Option<Value>,
        /// The fix's horizontal accuracy in metres (contract section 14): optional, > 0.
        #[serde(default)]
        accuracy: Option<Value>,
    },
    MediumSelection {
        session_id: Uuid,
        #[serde(default)]
        mediums: Option<Value>,
    },
    MediumShare {
        session_id: Uuid,
        #[serde(default)]
        mediums: Option<Value>,
    },
    StartChat {
        session_id: Uuid,
    },
    ChatMessage {
        session_id: Uuid,
        #[serde(default)]
        message: Option<Value>,
        #[serde(default)]
        client_message_id: Option<Value>,
        /// Boxed: most messages are plain text, and the kind fields would triple every frame's size.
        #[serde(flatten)]
        kind_fields: Box<KindFields>,
    },
    MessageDelivered {
        message_id: Uuid,
        #[serde(default)]
        session_id: Option<Uuid>,
    },
    MessageRead {
        message_id: Uuid,
        #[serde(default)]
        session_id: Option<Uuid>,
    },
    TypingIndicator {
        session_id: Uuid,
        #[serde(default)]
        is_typing: Option<Value>,
    },
    CancelConnection {
        session_id: Uuid,
    },
    FinishService {
        session_id: Uuid,
        #[serde(default)]
        rating_stars: Option<Value>,
        #[serde(default)]
        rating_description: Option<Value>,
    },
    Resume {
        session_id: Uuid,
        #[serde(default)]
        last_seq: Option<Value>,
    },
    MessagesRead {
        session_id: Uuid,
        #[serde(default)]
        up_to_seq: Option<Value>,
    },
}

/// A `chat_message`'s `kind` (`text` by default, `location`, `image` or `file`) and the fields of
/// that kind (contract section 9), as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KindFields {
    pub kind: Option<Value>,
    #[serde(alias = "lat")]
    pub latitude: Option<Value>,
    #[serde(alias = "lng")]
    pub longitude: Option<Value>,
    pub url: Option<Value>,
    pub name: Option<Value>,
    pub size_bytes: Option<Value>,
    pub mime_type: Option<Value>,
}

impl ClientFrame {
    /// A `chat_message`'s client id, when it is text (echoed in its error frame).
    pub fn client_message_id(&self) -> Option<String> {
        match self {
            ClientFrame::ChatMessage {
                client_message_id: Some(Value::String(id)),
                ..
            } => Some(id.chars().take(64).collect()),
            _ => None,
        }
    }

    pub fn kind(&self) -> FrameKind {
        match self {
            ClientFrame::WorkResponse { .. } => FrameKind::WorkResponse,
            ClientFrame::LocationUpdate { .. } => FrameKind::LocationUpdate,
            ClientFrame::MediumSelection { .. } => FrameKind::MediumSelection,
            ClientFrame::MediumShare { .. } => FrameKind::MediumShare,
            ClientFrame::StartChat { .. } => FrameKind::StartChat,
            ClientFrame::ChatMessage { .. } => FrameKind::ChatMessage,
            ClientFrame::MessageDelivered { .. } => FrameKind::MessageDelivered,
            ClientFrame::MessageRead { .. } => FrameKind::MessageRead,
            ClientFrame::TypingIndicator { .. } => FrameKind::TypingIndicator,
            ClientFrame::CancelConnection { .. } => FrameKind::CancelConnection,
            ClientFrame::FinishService { .. } => FrameKind::FinishService,
            ClientFrame::Resume { .. } => FrameKind::Resume,
            ClientFrame::MessagesRead { .. } => FrameKind::MessagesRead,
        }
    }
}

/// What kind of thing a chat message carries (contract section 9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    Text,
    Location,
    Image,
    File,
    /// Written by the server (`sender_type: "system"`).
    System,
}

impl MessageKind {
    pub fn parse(name: &str) -> Option<MessageKind> {
        Some(match name {
            "text" => MessageKind::Text,
            "location" => MessageKind::Location,
            "image" => MessageKind::Image,
            "file" => MessageKind::File,
            "system" => MessageKind::System,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Location => "location",
            MessageKind::Image => "image",
            MessageKind::File => "file",
            MessageKind::System => "system",
        }
    }
}

/// A message's kind and the fields of that kind, as events, `resume` and history carry them
/// (flattened beside `message`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Content {
    pub kind: MessageKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

impl Content {
    /// The inbox's preview of a message: its first 100 characters, or `[location]` and the like.
    pub fn preview(&self, text: &str) -> String {
        match self.kind {
            MessageKind::Text | MessageKind::System => text.chars().take(100).collect(),
            other => format!("[{}]", other.as_str()),
        }
    }
}

/// The session as both REST (`GET /api/sessions/{id}`) and `session_state` show it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SessionSnapshot {
    pub session_id: Uuid,
    pub work_id: i64,
    pub connection_state: String,
    pub distance_meters: Option<f64>,
    pub distance_formatted: Option<String>,
    /// The mediums the seeker chose (null until then, and always for a mediator).
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub seeker_mediums: Value,
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub provider_mediums: Value,
    pub chat_started_at: Option<String>,
    pub cancelled_by: Option<String>,
    pub completed_by: Option<String>,
    pub created_at: String,
    /// Present (possibly null) only in the seeker's snapshot: the rating is private.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i16>)]
    pub rating_stars: Option<Option<i16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub rating_description: Option<Option<String>>,
    /// The highest chat `seq` stored so far, so a resuming client knows what exists.
    pub last_seq: i64,
    /// Who is online (contract section 8).
    pub presence: Presence,
}

/// Which participants of a session are online; `mediator` only while a mediator has joined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Presence {
    pub seeker: bool,
    pub provider: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mediator: Option<bool>,
}

/// Everything the server sends on a socket.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Pong {
        timestamp: String,
    },
    /// The socket's token was replaced: it stays open until `exp` (unix seconds) plus the leeway.
    AuthRefreshed {
        exp: i64,
    },
    WorkAssigned {
        work_id: i64,
        seeker_name: Option<String>,
        seeker_mobile: Option<String>,
        service_type: String,
        distance: Option<String>,
        message: Option<String>,
        seeker_profile_pic: Option<String>,
        created_at: String,
        timestamp: String,
    },
    WorkAccepted {
        work_id: i64,
        session_id: Uuid,
        connection_state: String,
        message: String,
        timestamp: String,
    },
    WorkResponse {
        work_id: i64,
        accepted: bool,
        provider_name: Option<String>,
        provider_mobile: Option<String>,
        service_type: String,
        response_time: String,
    },
    DistanceUpdate {
        session_id: Uuid,
        distance_meters: f64,
        distance_formatted: String,
        timestamp: String,
    },
    /// The provider came within the arrival radius (contract section 14), to both parties.
    ProviderArrived {
        session_id: Uuid,
        distance_meters: f64,
        timestamp: String,
    },
    MediumsSelected {
        session_id: Uuid,
        mediums: Value,
        connection_state: String,
        timestamp: String,
    },
    SeekerMediumsSelected {
        session_id: Uuid,
        mediums: Value,
        connection_state: String,
        message: String,
        timestamp: String,
    },
    MediumsShared {
        session_id: Uuid,
        mediums: Value,
        timestamp: String,
    },
    ProviderMediumsShared {
        session_id: Uuid,
        mediums: Value,
        timestamp: String,
    },
    ChatReady {
        session_id: Uuid,
        chat_room_id: Uuid,
        message: String,
        timestamp: String,
    },
    ChatMessage {
        message_id: Uuid,
        session_id: Uuid,
        sender_type: Role,
        message: String,
        seq: i64,
        delivery_status: String,
        timestamp: String,
        /// Only when `resume` replays the resuming party's own message, so its outbox can match.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
        #[serde(flatten)]
        content: Content,
    },
    /// A message the server wrote into the chat (section 9).
    SystemMessage {
        session_id: Uuid,
        message_id: Uuid,
        seq: i64,
        message: String,
        timestamp: String,
    },
    /// A participant came online or went offline (section 8), to the other participants.
    Presence {
        session_id: Uuid,
        role: Role,
        online: bool,
        timestamp: String,
    },
    /// A participant read every message up to `up_to_seq` (section 9), to each sender concerned.
    MessagesRead {
        session_id: Uuid,
        reader_role: Role,
        up_to_seq: i64,
        timestamp: String,
    },
    MessageSent {
        message_id: Uuid,
        session_id: Uuid,
        seq: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
        timestamp: String,
        /// Additive (contract section 7): `message_sent` reaches every socket of the sender, and
        /// their other devices need the text and the sender's role to show the message.
        #[serde(skip_serializing_if = "Option::is_none")]
        sender_type: Option<Role>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(flatten, skip_serializing_if = "Option::is_none")]
        content: Option<Content>,
    },
    MessageStatusUpdate {
        message_id: Uuid,
        session_id: Uuid,
        status: String,
        timestamp: String,
    },
    TypingIndicator {
        session_id: Uuid,
        user_type: Role,
        is_typing: bool,
        timestamp: String,
    },
    ConnectionCancelled {
        session_id: Uuid,
        cancelled_by: Role,
        message: String,
        timestamp: String,
    },
    ServiceFinished {
        session_id: Uuid,
        finished_by: Role,
        message: String,
        timestamp: String,
    },
    /// The answer to `resume`: the snapshot, and whether more missed messages follow a `resume`
    /// from the last `seq` of this answer (a page holds at most 200 messages and 256 KiB).
    SessionState {
        #[serde(flatten)]
        snapshot: SessionSnapshot,
        has_more: bool,
    },
    Error {
        error: String,
        request_type: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<Uuid>,
        /// Echoed when a refused `chat_message` carried one, so the client knows which failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
    },
}

impl Event {
    pub fn error(
        error: impl Into<String>,
        request_type: Option<&str>,
        session_id: Option<Uuid>,
    ) -> Event {
        Event::Error {
            error: error.into(),
            request_type: request_type.map(str::to_owned),
            session_id,
            client_message_id: None,
        }
    }

    /// The frame as sent on the socket.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }
}

/// Error texts of contract section 4, shared so the gateway and the workers say the same thing.
pub mod errors {
    pub const INVALID_JSON: &str = "invalid JSON";
    pub const UNKNOWN_TYPE: &str = "unknown message type";
    pub const SESSION_ID_REQUIRED: &str = "session_id is required";
    pub const MESSAGE_ID_REQUIRED: &str = "message_id is required";
    pub const WORK_ID_REQUIRED: &str = "work_id is required and must be an integer";
    pub const SESSION_NOT_FOUND: &str = "session not found";
    pub const MESSAGE_NOT_FOUND: &str = "message not found";
    pub const WORK_NOT_FOUND: &str = "work order not found";
    pub const SESSION_ENDED: &str = "session already ended";
    pub const INVALID_MEDIUMS: &str = "Invalid mediums. Select 0-3 from: telegram, whatsapp, call";
    pub const INVALID_RATING: &str = "rating_stars must be an integer from 1 to 5";
    pub const INVALID_COORDINATES: &str =
        "invalid coordinates: latitude must be -90..90 and longitude -180..180";
    pub const INVALID_ACCURACY: &str = "invalid accuracy";
    pub const FRAME_TOO_LARGE: &str = "frame too large (limit 64 KiB)";
    pub const UNAVAILABLE: &str = "service temporarily unavailable, please retry";
    pub const SERVER_BUSY: &str = "server busy, please retry";
    pub const RATE_LIMITED: &str = "rate limit exceeded";
    pub const TOKEN_REQUIRED: &str = "token is required";
    pub const TOKEN_EXPIRED: &str = "token expired";
    pub const TOKEN_MISMATCH: &str = "token does not match this socket";

    pub fn not_allowed_for_role(kind: &str, role: &str) -> String {
        format!("{kind} is not allowed for a {role}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_the_first_100_characters_or_the_kind() {
        let text = Content::default();
        assert_eq!(text.preview(&"é".repeat(150)), "é".repeat(100));
        let image = Content {
            kind: MessageKind::Image,
            ..Content::default()
        };
        assert_eq!(image.preview("caption"), "[image]");
    }
}
