//! Any text a seed-002 client can send, and any event text: the conversation socket's translation
//! never panics; what it passes on is a native chat_message for its own session only, which the
//! gateway's judging then accepts or refuses like any native frame; what it shows is JSON.
#![no_main]

use gateway::dialects::Dialect;
use gateway::dialects::conversation_socket::ConversationSocket;
use gateway::inbound::{Verdict, judge};
use libfuzzer_sys::fuzz_target;
use shared::auth::Role;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let socket = ConversationSocket::new(uuid::Uuid::nil());
    if let Ok(Some(native)) = socket.inbound(text) {
        let frame: serde_json::Value = serde_json::from_str(&native).expect("native JSON");
        assert_eq!(frame["type"], "chat_message");
        assert_eq!(frame["session_id"], uuid::Uuid::nil().to_string());
        for role in [Role::Seeker, Role::Provider, Role::Mediator] {
            if let Verdict::Publish { subject, .. } = judge(&native, role) {
                assert_eq!(subject, format!("session.{}.chat", uuid::Uuid::nil()));
            }
        }
    }
    if let Some(shown) = socket.outbound(text) {
        let _: serde_json::Value = serde_json::from_str(&shown).expect("shown JSON");
    }
});
