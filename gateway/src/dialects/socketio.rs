//! The Socket.IO vocabularies of seed 004 (a NestJS job chat: `join_chat`, `send_message`,
//! `new_message`...) and seed 003 (an escrow chat: `subscribe_escrow`, `chat_message`,
//! `user_typing`...), contract section 11, as translations onto the native frames and events. Both
//! are spoken by the one Socket.IO server: a socket may use either, and each room (a session it
//! joined) remembers which vocabulary joined it, so its events come back in that shape. The
//! transport (handshake, rooms, acknowledgements) lives in the gateway's `socketio` module; this
//! one holds no state and no business rule, so the fuzz target can call it.

use serde_json::{Map, Value, json};
use uuid::Uuid;

/// Which client vocabulary joined a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vocabulary {
    /// Seed 004: `join_chat {chatId}`, events keyed by `chatId`.
    JobChat,
    /// Seed 003: `subscribe_escrow escrowId`, events keyed by `escrowId`.
    Escrow,
}

impl Vocabulary {
    /// The name of the session id field in this vocabulary's events.
    fn id_field(self) -> &'static str {
        match self {
            Vocabulary::JobChat => "chatId",
            Vocabulary::Escrow => "escrowId",
        }
    }
}

/// `client_message_id`s the gateway makes for messages sent without a `tempId` start with this;
/// they are never shown to the client as a `tempId`.
pub const GENERATED_ID_PREFIX: &str = "sio~";

/// What a client event asks for.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// Join the room of a session (once the workers say the user takes part in it).
    Join {
        session_id: Uuid,
        vocabulary: Vocabulary,
    },
    Leave {
        session_id: Uuid,
    },
    /// A chat message: the native `chat_message` frame and what its acknowledgement needs.
    Send {
        session_id: Uuid,
        native: String,
        client_message_id: String,
        /// The client's temporary id as it sent it (a number stays a number).
        temp_id: Option<Value>,
    },
    /// Any other native frame (typing, read up to).
    Frame {
        native: String,
    },
}

/// The event's argument: Socket.IO hands several arguments over as an array, one as itself.
fn argument(data: &Value) -> &Value {
    match data {
        Value::Array(arguments) => arguments.first().unwrap_or(&Value::Null),
        other => other,
    }
}

/// The session an event names, as `field` of an object or (seed 003's `subscribe_escrow id`) the
/// argument itself.
fn session_of(data: &Value, field: &str) -> Result<Uuid, String> {
    let id = match data {
        Value::Object(object) => object.get(field),
        other => Some(other),
    };
    let text = match id {
        Some(Value::String(text)) => text.as_str(),
        Some(Value::Null) | None => return Err(format!("{field} is required")),
        Some(_) => return Err(format!("{field} must be a session id")),
    };
    Uuid::parse_str(text).map_err(|_| String::from("session not found"))
}

fn field<'a>(data: &'a Value, name: &str) -> Option<&'a Value> {
    data.as_object().and_then(|object| object.get(name))
}

/// A client event as what it asks for; `make_id` names a message sent without a `tempId`.
pub fn request(
    event: &str,
    data: &Value,
    make_id: impl FnOnce() -> String,
) -> Result<Request, String> {
    let data = argument(data);
    match event {
        "join_chat" => Ok(Request::Join {
            session_id: session_of(data, "chatId")?,
            vocabulary: Vocabulary::JobChat,
        }),
        "subscribe_escrow" => Ok(Request::Join {
            session_id: session_of(data, "escrowId")?,
            vocabulary: Vocabulary::Escrow,
        }),
        "leave_chat" => Ok(Request::Leave {
            session_id: session_of(data, "chatId")?,
        }),
        "unsubscribe_escrow" => Ok(Request::Leave {
            session_id: session_of(data, "escrowId")?,
        }),
        "send_message" => send(data, "chatId", "message", make_id),
        "chat_message" => send(data, "escrowId", "content", make_id),
        "typing" => {
            let session_id = session_of(data, "chatId")?;
            let is_typing = field(data, "isTyping")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            Ok(typing(session_id, is_typing))
        }
        "typing_start" => Ok(typing(session_of(data, "escrowId")?, true)),
        "typing_stop" => Ok(typing(session_of(data, "escrowId")?, false)),
        "mark_read" => {
            let session_id =
                session_of(data, "chatId").or_else(|_| session_of(data, "escrowId"))?;
            let up_to_seq = field(data, "upToSeq").cloned().unwrap_or(Value::Null);
            let native =
                json!({"type": "messages_read", "session_id": session_id, "up_to_seq": up_to_seq});
            Ok(Request::Frame {
                native: native.to_string(),
            })
        }
        other => Err(format!("unknown event {}", printable(other))),
    }
}

/// An event name as an error may show it: at most 64 characters.
fn printable(name: &str) -> String {
    let shown: String = name.chars().take(64).collect();
    format!("{shown:?}")
}

fn typing(session_id: Uuid, is_typing: bool) -> Request {
    let native =
        json!({"type": "typing_indicator", "session_id": session_id, "is_typing": is_typing});
    Request::Frame {
        native: native.to_string(),
    }
}

fn send(
    data: &Value,
    id_field: &str,
    text_field: &str,
    make_id: impl FnOnce() -> String,
) -> Result<Request, String> {
    let session_id = session_of(data, id_field)?;
    let temp_id = field(data, "tempId").filter(|id| !id.is_null()).cloned();
    let client_message_id = match &temp_id {
        None => make_id(),
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(number)) => number.to_string(),
        Some(_) => return Err(String::from("tempId must be text or a number")),
    };
    let mut native = Map::new();
    native.insert(String::from("type"), Value::from("chat_message"));
    native.insert(
        String::from("session_id"),
        Value::from(session_id.to_string()),
    );
    if let Some(text) = field(data, text_field) {
        native.insert(String::from("message"), text.clone());
    }
    native.insert(
        String::from("client_message_id"),
        Value::from(client_message_id.as_str()),
    );
    for name in std::iter::once("kind").chain(super::KIND_FIELDS) {
        if let Some(value) = field(data, name) {
            native.insert(name.to_owned(), value.clone());
        }
    }
    Ok(Request::Send {
        session_id,
        native: Value::Object(native).to_string(),
        client_message_id,
        temp_id,
    })
}

/// A native chat, system or own (`message_sent`) message in `vocabulary`: seed 004's
/// `new_message` or seed 003's `chat_message`.
fn message(
    event: &Map<String, Value>,
    session_id: &str,
    vocabulary: Vocabulary,
    sender_role: &str,
) -> (&'static str, Value) {
    let kind = match event.get("type").and_then(Value::as_str) {
        Some("system_message") => "system",
        _ => event.get("kind").and_then(Value::as_str).unwrap_or("text"),
    };
    let text = event.get("message").cloned().unwrap_or(Value::Null);
    let (name, mut shown) = match vocabulary {
        Vocabulary::JobChat => (
            "new_message",
            json!({
                "id": event.get("message_id"),
                "chatId": session_id,
                "senderRole": sender_role,
                "message": text,
                "kind": kind,
                "seq": event.get("seq"),
                "createdAt": event.get("timestamp"),
            }),
        ),
        Vocabulary::Escrow => (
            "chat_message",
            json!({
                "id": event.get("message_id"),
                "escrowId": session_id,
                "senderRole": sender_role,
                "content": text,
                "kind": kind,
                "seq": event.get("seq"),
                "timestamp": event.get("timestamp"),
            }),
        ),
    };
    for name in super::CONTENT_FIELDS {
        if let Some(value) = event.get(name) {
            shown[name] = value.clone();
        }
    }
    if let Some(Value::String(id)) = event.get("client_message_id")
        && !id.starts_with(GENERATED_ID_PREFIX)
    {
        shown["tempId"] = Value::from(id.as_str());
    }
    (name, shown)
}

/// A native event as a Socket.IO event: its name and data, or `None` when this socket does not
/// show it (chat of a session it has not joined, `pong`). Chat events of joined sessions come in
/// the vocabulary that joined; everything that is not chat (work orders, distance, mediums,
/// the end of a session) comes as seed 003's `notification`, unchanged; errors as `error`.
pub fn event(
    native: &Map<String, Value>,
    vocabulary_of: impl Fn(&str) -> Option<Vocabulary>,
) -> Option<(&'static str, Value)> {
    let kind = native.get("type").and_then(Value::as_str)?;
    let session_id = native.get("session_id").and_then(Value::as_str);
    let joined = || session_id.and_then(|id| Some((id, vocabulary_of(id)?)));
    let text_of = |name: &str| native.get(name).and_then(Value::as_str).unwrap_or_default();
    match kind {
        "chat_message" => {
            let (session_id, vocabulary) = joined()?;
            Some(message(
                native,
                session_id,
                vocabulary,
                text_of("sender_type"),
            ))
        }
        // The sender's own message, on every socket of the sender; a resend's answer has no text
        // (it only acknowledges) and is not shown again.
        "message_sent" => {
            native.get("message")?;
            let (session_id, vocabulary) = joined()?;
            Some(message(
                native,
                session_id,
                vocabulary,
                text_of("sender_type"),
            ))
        }
        "system_message" => {
            let (session_id, vocabulary) = joined()?;
            Some(message(native, session_id, vocabulary, "system"))
        }
        "typing_indicator" => {
            let (session_id, vocabulary) = joined()?;
            let is_typing = native.get("is_typing").cloned().unwrap_or(Value::Null);
            let role = text_of("user_type");
            Some(match vocabulary {
                Vocabulary::JobChat => (
                    "typing",
                    json!({"chatId": session_id, "role": role, "isTyping": is_typing}),
                ),
                Vocabulary::Escrow => (
                    "user_typing",
                    json!({"escrowId": session_id, "role": role, "isTyping": is_typing}),
                ),
            })
        }
        "presence" => {
            let (session_id, vocabulary) = joined()?;
            let name = if native.get("online").and_then(Value::as_bool) == Some(true) {
                "user_joined"
            } else {
                "user_left"
            };
            let mut shown = json!({"role": text_of("role"), "timestamp": native.get("timestamp")});
            shown[vocabulary.id_field()] = Value::from(session_id);
            Some((name, shown))
        }
        "messages_read" => {
            let (session_id, vocabulary) = joined()?;
            let name = match vocabulary {
                Vocabulary::JobChat => "messages_read",
                Vocabulary::Escrow => "message_read",
            };
            let mut shown = json!({
                "readerRole": text_of("reader_role"),
                "upToSeq": native.get("up_to_seq"),
            });
            shown[vocabulary.id_field()] = Value::from(session_id);
            Some((name, shown))
        }
        "error" => {
            let mut shown = json!({"message": text_of("error")});
            for (from, to) in [("request_type", "requestType"), ("session_id", "sessionId")] {
                if let Some(value) = native.get(from).filter(|value| !value.is_null()) {
                    shown[to] = value.clone();
                }
            }
            Some(("error", shown))
        }
        // Per-message statuses and resume answers belong to the native clients' outboxes.
        "pong" | "message_status_update" | "session_state" => None,
        _ => Some(("notification", Value::Object(native.clone()))),
    }
}

/// The `user_joined` events that tell a socket joining a session who of the others is online
/// now, from the session snapshot's `presence` (`{seeker, provider, mediator?}`).
pub fn online_now(
    presence: &Value,
    own_role: &str,
    session_id: &Uuid,
    vocabulary: Vocabulary,
    timestamp: &str,
) -> Vec<Value> {
    let Some(presence) = presence.as_object() else {
        return Vec::new();
    };
    presence
        .iter()
        .filter(|(role, online)| role.as_str() != own_role && online.as_bool() == Some(true))
        .map(|(role, _)| {
            let mut shown = json!({"role": role, "timestamp": timestamp});
            shown[vocabulary.id_field()] = Value::from(session_id.to_string());
            shown
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated() -> String {
        format!("{GENERATED_ID_PREFIX}c1-1")
    }

    fn native_of(request: Request) -> Value {
        match request {
            Request::Send { native, .. } | Request::Frame { native } => {
                serde_json::from_str(&native).expect("json")
            }
            other => panic!("not a frame: {other:?}"),
        }
    }

    #[test]
    fn seed_004_events_become_native_frames() {
        let id = Uuid::new_v4();
        let send = request(
            "send_message",
            &json!({"chatId": id.to_string(), "message": "Hello", "tempId": 17}),
            generated,
        )
        .expect("valid");
        let Request::Send {
            client_message_id,
            temp_id,
            ..
        } = &send
        else {
            panic!("not a send: {send:?}");
        };
        assert_eq!(client_message_id, "17");
        assert_eq!(temp_id, &Some(json!(17)));
        let native = native_of(send);
        assert_eq!(native["type"], "chat_message");
        assert_eq!(native["session_id"], id.to_string());
        assert_eq!(native["message"], "Hello");
        assert_eq!(native["client_message_id"], "17");
        let typing = native_of(
            request(
                "typing",
                &json!({"chatId": id.to_string(), "isTyping": false}),
                generated,
            )
            .expect("valid"),
        );
        assert_eq!(typing["type"], "typing_indicator");
        assert_eq!(typing["is_typing"], false);
        let read = native_of(
            request(
                "mark_read",
                &json!({"chatId": id.to_string(), "upToSeq": 4}),
                generated,
            )
            .expect("valid"),
        );
        assert_eq!(read["type"], "messages_read");
        assert_eq!(read["up_to_seq"], 4);
        assert_eq!(
            request("join_chat", &json!({"chatId": id.to_string()}), generated),
            Ok(Request::Join {
                session_id: id,
                vocabulary: Vocabulary::JobChat
            })
        );
    }

    #[test]
    fn seed_003_events_take_the_escrow_id_as_an_argument_or_a_field() {
        let id = Uuid::new_v4();
        assert_eq!(
            request("subscribe_escrow", &json!(id.to_string()), generated),
            Ok(Request::Join {
                session_id: id,
                vocabulary: Vocabulary::Escrow
            })
        );
        let message = request(
            "chat_message",
            &json!([{"escrowId": id.to_string(), "content": "hi"}]),
            generated,
        )
        .expect("valid");
        let native = native_of(message);
        assert_eq!(native["message"], "hi");
        assert_eq!(native["client_message_id"], generated());
        let typing = native_of(
            request(
                "typing_start",
                &json!({"escrowId": id.to_string()}),
                generated,
            )
            .expect("valid"),
        );
        assert_eq!(typing["is_typing"], true);
    }

    #[test]
    fn bad_events_are_refused_with_a_reason() {
        assert_eq!(
            request("join_chat", &json!({}), generated),
            Err(String::from("chatId is required"))
        );
        assert_eq!(
            request("join_chat", &json!({"chatId": "x.*"}), generated),
            Err(String::from("session not found"))
        );
        assert_eq!(
            request("send_message", &json!({"chatId": 5}), generated),
            Err(String::from("chatId must be a session id"))
        );
        let id = Uuid::new_v4().to_string();
        assert!(
            request(
                "send_message",
                &json!({"chatId": id, "message": "x", "tempId": {}}),
                generated
            )
            .is_err()
        );
        assert_eq!(
            request("dance", &Value::Null, generated),
            Err(String::from("unknown event \"dance\""))
        );
    }

    #[test]
    fn native_events_show_in_the_vocabulary_of_the_room() {
        let id = Uuid::new_v4().to_string();
        let native = json!({"type": "chat_message", "message_id": "m1", "session_id": id,
            "sender_type": "provider", "message": "hi", "seq": 2, "timestamp": "t",
            "delivery_status": "sent", "kind": "text"});
        let native = native.as_object().expect("object");
        let (name, shown) = event(native, |_| Some(Vocabulary::JobChat)).expect("shown");
        assert_eq!(name, "new_message");
        assert_eq!(shown["chatId"], id.as_str());
        assert_eq!(shown["senderRole"], "provider");
        assert_eq!(shown["message"], "hi");
        let (name, shown) = event(native, |_| Some(Vocabulary::Escrow)).expect("shown");
        assert_eq!(name, "chat_message");
        assert_eq!(shown["escrowId"], id.as_str());
        assert_eq!(shown["content"], "hi");
        assert_eq!(event(native, |_| None), None, "not joined: not shown");
        let work = json!({"type": "work_assigned", "work_id": 3});
        let (name, shown) = event(work.as_object().expect("object"), |_| None).expect("shown");
        assert_eq!(name, "notification");
        assert_eq!(shown["work_id"], 3);
        let presence = json!({"type": "presence", "session_id": id, "role": "seeker", "online": false, "timestamp": "t"});
        let (name, shown) = event(presence.as_object().expect("object"), |_| {
            Some(Vocabulary::Escrow)
        })
        .expect("shown");
        assert_eq!(name, "user_left");
        assert_eq!(shown["escrowId"], id.as_str());
    }

    #[test]
    fn a_generated_id_is_never_shown_as_a_temp_id() {
        let id = Uuid::new_v4().to_string();
        let own = |client_message_id: &str| {
            json!({"type": "message_sent", "message_id": "m1", "session_id": id, "seq": 2,
                "client_message_id": client_message_id, "sender_type": "seeker", "message": "hi"})
        };
        let mine = own("t-1");
        let (_, shown) = event(mine.as_object().expect("object"), |_| {
            Some(Vocabulary::JobChat)
        })
        .expect("shown");
        assert_eq!(shown["tempId"], "t-1");
        let generated = own(&generated());
        let (_, shown) = event(generated.as_object().expect("object"), |_| {
            Some(Vocabulary::JobChat)
        })
        .expect("shown");
        assert!(shown.get("tempId").is_none());
    }
}
