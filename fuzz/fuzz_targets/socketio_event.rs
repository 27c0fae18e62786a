//! Any Socket.IO event a client can send (a name and a JSON argument), and any native event: the
//! seed 003/004 vocabularies never panic; what they pass on is a native frame of the session the
//! event named, which the gateway's judging routes to that session's subjects only; what they show
//! is an object with a known event name.
#![no_main]

use gateway::dialects::socketio::{Request, Vocabulary, event, request};
use gateway::inbound::{Verdict, judge};
use libfuzzer_sys::fuzz_target;
use shared::auth::Role;

const EVENTS: [&str; 12] = [
    "join_chat",
    "leave_chat",
    "send_message",
    "typing",
    "mark_read",
    "subscribe_escrow",
    "unsubscribe_escrow",
    "chat_message",
    "typing_start",
    "typing_stop",
    "dance",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(argument) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let name = EVENTS[usize::from(selector) % EVENTS.len()];
    let native = match request(name, &argument, || String::from("sio~fuzz")) {
        Ok(Request::Send {
            session_id, native, ..
        }) => Some((session_id, native)),
        Ok(Request::Frame { native }) => {
            let frame: serde_json::Value = serde_json::from_str(&native).expect("native JSON");
            let session_id = frame["session_id"].as_str().expect("a session").parse().expect("a uuid");
            Some((session_id, native))
        }
        Ok(Request::Join { .. } | Request::Leave { .. }) | Err(_) => None,
    };
    if let Some((session_id, native)) = native {
        for role in [Role::Seeker, Role::Provider, Role::Mediator] {
            if let Verdict::Publish { subject, .. } = judge(&native, role) {
                assert!(subject.starts_with(&format!("session.{session_id}.")), "{subject}");
            }
        }
    }
    if let serde_json::Value::Object(native_event) = &argument {
        for vocabulary in [None, Some(Vocabulary::JobChat), Some(Vocabulary::Escrow)] {
            if let Some((shown_name, shown)) = event(native_event, |_| vocabulary) {
                assert!(!shown_name.is_empty());
                assert!(shown.is_object(), "{shown_name}: {shown}");
            }
        }
    }
});
