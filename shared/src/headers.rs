//! NATS header names. Workers trust identity only from these, and only the gateway sets them.

/// The authenticated user's id (the token's `sub`).
pub const USER_ID: &str = "user-id";
/// `seeker` or `provider`.
pub const ROLE: &str = "role";
/// The token's optional `name`, carried on REST requests and the connect notice.
pub const USER_NAME: &str = "user-name";
/// The socket a frame came from; on an event, the one socket it is addressed to.
pub const CONN_ID: &str = "conn-id";
/// Ties every event to the inbound frame that caused it.
pub const TRACE_ID: &str = "trace-id";
/// On an event: deliver it, then close all the user's sockets with 1000.
pub const CLOSE: &str = "close";
/// On a dead-lettered frame in `DEAD_LETTER`: why it could not be applied.
pub const ERROR: &str = "error";
/// JetStream's de-duplication header; the gateway sets it to a unique frame id.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// On a dead letter: the `INBOUND` subject the frame was stored under (partition included).
pub const ORIGINAL_SUBJECT: &str = "original-subject";
/// On a dead letter: the frame's own `Nats-Msg-Id` (the dead letter carries one of its own).
pub const ORIGINAL_MSG_ID: &str = "original-msg-id";
