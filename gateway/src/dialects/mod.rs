//! The neighbouring systems' client protocols (contract section 11), each a translation at the edge
//! onto the native frames, subjects and workers: a dialect turns a client's frame into a native
//! frame (which then goes through the same checks, limits and subjects as any native frame) and a
//! native event into its own shape. No business rule lives here; adding a dialect means one new
//! module and a route. A WebSocket dialect implements `Dialect`; Socket.IO's vocabularies
//! (`socketio`) are translations of the same kind behind the gateway's Socket.IO transport.

pub mod conversation_socket;
pub mod socketio;

/// The fields of a message's kind (contract section 9) a dialect's client may send beside the
/// text, passed on to the native `chat_message` as they are (`lat`/`lng` are accepted aliases).
pub const KIND_FIELDS: [&str; 8] = [
    "latitude",
    "longitude",
    "lat",
    "lng",
    "url",
    "name",
    "size_bytes",
    "mime_type",
];

/// The fields of a message's kind as native events (`chat_message`, `message_sent`) carry them.
pub const CONTENT_FIELDS: [&str; 6] = [
    "latitude",
    "longitude",
    "url",
    "name",
    "size_bytes",
    "mime_type",
];

/// One client protocol spoken on a socket.
pub trait Dialect: Send + Sync {
    /// A client frame as a native frame (JSON text); `Ok(None)` to ignore it; `Err` with a reason
    /// the client hears in the dialect's error shape.
    fn inbound(&self, text: &str) -> Result<Option<String>, String>;
    /// A native event (JSON text) as this dialect's frame, or `None` when it has no equivalent.
    fn outbound(&self, event: &str) -> Option<String>;
    /// The dialect's error frame.
    fn error(&self, reason: &str) -> String;
}
