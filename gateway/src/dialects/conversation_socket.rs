//! Seed 002's conversation socket, `/ws/chat/{conversation_id}/` (contract section 11): the
//! conversation is a session. The client sends `{"message", "type": "TEXT"|"LOCATION"|"IMAGE"|"FILE",
//! ...}` (optional `client_message_id`); every connected participant, the sender included, gets
//! `{"type": "message", "message": {id, conversation_id, sender_id, sender_name, message_text,
//! message_type, timestamp, is_read, seq}}`, where `sender_id` is the sender's role and
//! `sender_name` its title, so the chat stays anonymous. An empty TEXT is ignored, as the seed
//! does; other bad input gets `{"type": "error", "error"}`.

use super::Dialect;
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub struct ConversationSocket {
    /// The session id as events carry it, made once: every event is matched against it.
    session_id: String,
}

fn kind_of(message_type: &str) -> Option<&'static str> {
    Some(match message_type.to_ascii_uppercase().as_str() {
        "TEXT" => "text",
        "LOCATION" => "location",
        "IMAGE" => "image",
        "FILE" => "file",
        _ => return None,
    })
}

fn title(role: &str) -> &'static str {
    match role {
        "seeker" => "Seeker",
        "provider" => "Provider",
        "mediator" => "Mediator",
        _ => "System",
    }
}

impl ConversationSocket {
    pub fn new(session_id: Uuid) -> ConversationSocket {
        ConversationSocket {
            session_id: session_id.to_string(),
        }
    }

    fn message(&self, event: &Map<String, Value>, sender: &str, is_read: bool) -> String {
        let kind = event.get("kind").and_then(Value::as_str).unwrap_or("text");
        let mut message = json!({
            "id": event.get("message_id"),
            "conversation_id": self.session_id,
            "sender_id": sender,
            "sender_name": title(sender),
            "message_text": event.get("message").and_then(Value::as_str).unwrap_or_default(),
            "message_type": kind.to_ascii_uppercase(),
            "timestamp": event.get("timestamp"),
            "is_read": is_read,
            "seq": event.get("seq"),
        });
        for field in super::CONTENT_FIELDS
            .into_iter()
            .chain(["client_message_id"])
        {
            if let Some(value) = event.get(field) {
                message[field] = value.clone();
            }
        }
        json!({"type": "message", "message": message}).to_string()
    }
}

impl Dialect for ConversationSocket {
    fn inbound(&self, text: &str) -> Result<Option<String>, String> {
        let Ok(Value::Object(frame)) = serde_json::from_str::<Value>(text) else {
            return Err(String::from(
                "invalid JSON: send {\"message\": \"...\", \"type\": \"TEXT\"}",
            ));
        };
        let message_type = frame.get("type").and_then(Value::as_str).unwrap_or("TEXT");
        let Some(kind) = kind_of(message_type) else {
            return Err(String::from(
                "type must be one of TEXT, LOCATION, IMAGE, FILE",
            ));
        };
        let message = frame.get("message").cloned().unwrap_or(Value::Null);
        if kind == "text" && message.as_str().is_none_or(|text| text.trim().is_empty()) {
            // The seed ignores an empty message.
            return Ok(None);
        }
        let mut native = Map::new();
        native.insert(String::from("type"), Value::from("chat_message"));
        native.insert(
            String::from("session_id"),
            Value::from(self.session_id.as_str()),
        );
        native.insert(String::from("kind"), Value::from(kind));
        if !message.is_null() {
            native.insert(String::from("message"), message);
        }
        for field in std::iter::once("client_message_id").chain(super::KIND_FIELDS) {
            if let Some(value) = frame.get(field) {
                native.insert(field.to_owned(), value.clone());
            }
        }
        Ok(Some(Value::Object(native).to_string()))
    }

    fn outbound(&self, event: &str) -> Option<String> {
        let Ok(Value::Object(event)) = serde_json::from_str::<Value>(event) else {
            return None;
        };
        let of_this_conversation = event
            .get("session_id")
            .and_then(Value::as_str)
            .is_some_and(|id| id == self.session_id);
        match event.get("type").and_then(Value::as_str)? {
            "error" => Some(
                self.error(
                    event
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("error"),
                ),
            ),
            "chat_message" if of_this_conversation => {
                let sender = event.get("sender_type").and_then(Value::as_str)?.to_owned();
                let is_read = event.get("delivery_status").and_then(Value::as_str) == Some("read");
                Some(self.message(&event, &sender, is_read))
            }
            // The sender's own message (on every socket of the sender), with its text.
            "message_sent" if of_this_conversation => {
                let sender = event.get("sender_type").and_then(Value::as_str)?.to_owned();
                event.get("message")?;
                Some(self.message(&event, &sender, false))
            }
            "system_message" if of_this_conversation => Some(self.message(&event, "system", true)),
            _ => None,
        }
    }

    fn error(&self, reason: &str) -> String {
        json!({"type": "error", "error": reason}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> ConversationSocket {
        ConversationSocket::new(Uuid::nil())
    }

    #[test]
    fn a_seed_002_message_becomes_a_native_chat_message() {
        let native = socket()
            .inbound(r#"{"message": "Hello", "type": "TEXT", "client_message_id": "t1"}"#)
            .expect("valid")
            .expect("not ignored");
        let native: Value = serde_json::from_str(&native).expect("json");
        assert_eq!(native["type"], "chat_message");
        assert_eq!(native["kind"], "text");
        assert_eq!(native["message"], "Hello");
        assert_eq!(native["client_message_id"], "t1");
        assert_eq!(native["session_id"], Uuid::nil().to_string());
    }

    #[test]
    fn an_empty_text_is_ignored_and_bad_input_is_an_error() {
        assert_eq!(
            socket().inbound(r#"{"message": " ", "type": "TEXT"}"#),
            Ok(None)
        );
        assert!(socket().inbound("not json").is_err());
        assert!(
            socket()
                .inbound(r#"{"message": "x", "type": "VIDEO"}"#)
                .is_err()
        );
        let location = socket()
            .inbound(r#"{"type": "LOCATION", "latitude": 1.5, "longitude": 2.5}"#)
            .expect("valid");
        assert!(
            location.is_some(),
            "a location with coordinates is not empty"
        );
    }

    #[test]
    fn a_native_event_of_another_conversation_or_kind_is_not_shown() {
        let other = json!({"type": "chat_message", "session_id": Uuid::new_v4(), "sender_type": "seeker", "message": "x"});
        assert_eq!(socket().outbound(&other.to_string()), None);
        assert_eq!(socket().outbound(r#"{"type": "distance_update"}"#), None);
        let mine = json!({"type": "chat_message", "session_id": Uuid::nil(), "sender_type": "mediator",
            "message": "hi", "message_id": "m1", "seq": 3, "timestamp": "t", "delivery_status": "sent", "kind": "text"});
        let shown: Value =
            serde_json::from_str(&socket().outbound(&mine.to_string()).expect("shown"))
                .expect("json");
        assert_eq!(shown["type"], "message");
        assert_eq!(shown["message"]["sender_id"], "mediator");
        assert_eq!(shown["message"]["sender_name"], "Mediator");
        assert_eq!(shown["message"]["message_type"], "TEXT");
        assert_eq!(shown["message"]["seq"], 3);
    }
}
