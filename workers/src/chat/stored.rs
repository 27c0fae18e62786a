//! A chat message as stored, read by history, `resume` and the re-sends on connect, and turned
//! into what a participant sees: `chat_message`, or `system_message` for the server's own.

use chrono::{DateTime, Utc};
use shared::auth::Role;
use shared::frames::{Content, Event, MessageKind};
use shared::rest::HistoryEntry;
use sqlx::FromRow;
use uuid::Uuid;

/// Every column a [`StoredMessage`] reads.
#[macro_export]
macro_rules! stored_message_columns {
    () => {
        "message_id, session_id, seq, sender_type, message_text, delivery_status, \
         client_message_id, created_at, kind, latitude, longitude, url, file_name, size_bytes, \
         mime_type"
    };
}

/// `SELECT` of every column a [`StoredMessage`] reads, followed by `$tail`.
#[macro_export]
macro_rules! stored_message_select {
    ($tail:literal) => {
        concat!(
            "SELECT ",
            $crate::stored_message_columns!(),
            " FROM chat_messages ",
            $tail
        )
    };
}

#[derive(Clone, Debug, FromRow)]
pub struct StoredMessage {
    pub message_id: Uuid,
    pub session_id: Uuid,
    pub seq: i64,
    pub sender_type: String,
    pub message_text: String,
    pub delivery_status: String,
    pub client_message_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub kind: String,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub url: Option<String>,
    pub file_name: Option<String>,
    pub size_bytes: Option<i64>,
    pub mime_type: Option<String>,
}

impl StoredMessage {
    pub fn content(&self) -> Content {
        Content {
            kind: MessageKind::parse(&self.kind).unwrap_or_default(),
            latitude: self.latitude,
            longitude: self.longitude,
            url: self.url.clone(),
            name: self.file_name.clone(),
            size_bytes: self.size_bytes,
            mime_type: self.mime_type.clone(),
        }
    }

    /// The event `viewer` gets for it; a participant's own messages carry their client id (so a
    /// resuming outbox can match them), the others' never do.
    pub fn event_for(self, viewer: Role) -> Event {
        let timestamp = shared::time::rfc3339(self.created_at);
        let content = self.content();
        let Some(sender_type) = Role::parse(&self.sender_type) else {
            return Event::SystemMessage {
                session_id: self.session_id,
                message_id: self.message_id,
                seq: self.seq,
                message: self.message_text,
                timestamp,
            };
        };
        Event::ChatMessage {
            message_id: self.message_id,
            session_id: self.session_id,
            sender_type,
            message: self.message_text,
            seq: self.seq,
            delivery_status: self.delivery_status,
            timestamp,
            client_message_id: self.client_message_id.filter(|_| sender_type == viewer),
            content,
        }
    }

    pub fn into_history_entry(self) -> HistoryEntry {
        let content = self.content();
        HistoryEntry {
            message_id: self.message_id,
            seq: self.seq,
            sender_type: self.sender_type,
            message: self.message_text,
            delivery_status: self.delivery_status,
            timestamp: shared::time::rfc3339(self.created_at),
            content,
        }
    }
}
