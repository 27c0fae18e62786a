//! Judging a client frame before it goes anywhere: JSON syntax, a known `type` allowed for the
//! role, and the ids that become subject tokens (UUIDs, an integer `work_id`). Only what passes is
//! published, unchanged, to the subject its type routes to; everything else is answered with the
//! error frame of contract section 4. Parsing borrows from the frame: nothing is copied.

use serde::Deserialize;
use serde_json::value::RawValue;
use shared::auth::Role;
use shared::frames::{FrameKind, Route, errors};
use shared::subjects::{self, Topic};
use std::borrow::Cow;
use uuid::Uuid;

/// The few fields the gateway looks at; everything else is the workers' business.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow)]
    session_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    work_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    token: Option<&'a RawValue>,
}

/// What to do with a frame.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Answer `pong` here.
    Ping,
    /// Check this token and, if it is the socket's user's, keep the socket open until it expires.
    AuthRefresh { token: String },
    /// Publish the frame unchanged on `subject`.
    Publish {
        kind: FrameKind,
        subject: String,
        durable: bool,
    },
    /// Answer an error frame; nothing is published.
    Refuse {
        error: Cow<'static, str>,
        request_type: Option<String>,
        session_id: Option<Uuid>,
    },
}

fn refuse(error: impl Into<Cow<'static, str>>, request_type: Option<&str>) -> Verdict {
    Verdict::Refuse {
        error: error.into(),
        request_type: request_type.map(str::to_owned),
        session_id: None,
    }
}

/// A JSON string field as text (`None` for null, a number, an object...).
fn as_string<'a>(raw: Option<&'a RawValue>) -> Option<Cow<'a, str>> {
    raw.and_then(|raw| serde_json::from_str::<Cow<'a, str>>(raw.get()).ok())
}

fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|raw| raw.get() == "null")
}

fn as_uuid(raw: Option<&RawValue>) -> Option<Uuid> {
    as_string(raw).and_then(|text| Uuid::parse_str(&text).ok())
}

pub fn judge(frame: &str, role: Role) -> Verdict {
    // serde reads a JSON array into a struct field by field (`["ping"]` would be a ping): a frame
    // is an object or it has no type.
    if !frame.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde::de::IgnoredAny>(frame) {
            Ok(_) => refuse(errors::UNKNOWN_TYPE, None),
            Err(_) => refuse(errors::INVALID_JSON, None),
        };
    }
    let envelope: Envelope = match serde_json::from_str(frame) {
        Ok(envelope) => envelope,
        Err(error) if error.is_data() => return refuse(errors::UNKNOWN_TYPE, None),
        Err(_) => return refuse(errors::INVALID_JSON, None),
    };
    let Some(type_name) = as_string(envelope.kind) else {
        return refuse(errors::UNKNOWN_TYPE, None);
    };
    let Some(kind) = FrameKind::from_name(&type_name) else {
        return refuse(errors::UNKNOWN_TYPE, Some(&type_name));
    };
    let request_type = Some(kind.name());
    if !kind.allowed_for(role) {
        return refuse(
            errors::not_allowed_for_role(kind.name(), role.as_str()),
            request_type,
        );
    }
    let session = || -> Result<Uuid, Verdict> {
        if is_null(envelope.session_id) {
            return Err(refuse(errors::SESSION_ID_REQUIRED, request_type));
        }
        as_uuid(envelope.session_id).ok_or_else(|| refuse(errors::SESSION_NOT_FOUND, request_type))
    };
    let publish = |subject: String, durable: bool| Verdict::Publish {
        kind,
        subject,
        durable,
    };
    match kind.route() {
        Route::Gateway if kind == FrameKind::AuthRefresh => match as_string(envelope.token) {
            Some(token) if !token.is_empty() => Verdict::AuthRefresh {
                token: token.into_owned(),
            },
            _ => refuse(errors::TOKEN_REQUIRED, request_type),
        },
        Route::Gateway => Verdict::Ping,
        Route::Work => match envelope
            .work_id
            .and_then(|raw| raw.get().parse::<i64>().ok())
        {
            Some(work_id) if work_id > 0 => publish(subjects::work_response(work_id), true),
            _ => refuse(errors::WORK_ID_REQUIRED, request_type),
        },
        Route::Session(topic) => match session() {
            Ok(session_id) => publish(subjects::session(&session_id, topic), topic.is_durable()),
            Err(verdict) => verdict,
        },
        Route::Receipt => {
            if is_null(envelope.message_id) {
                return refuse(errors::MESSAGE_ID_REQUIRED, request_type);
            }
            let Some(message_id) = as_uuid(envelope.message_id) else {
                return refuse(errors::MESSAGE_NOT_FOUND, request_type);
            };
            if is_null(envelope.session_id) {
                return publish(subjects::message_receipt(&message_id), true);
            }
            match session() {
                Ok(session_id) => publish(subjects::session(&session_id, Topic::Receipt), true),
                Err(verdict) => verdict,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(verdict: Verdict) -> String {
        match verdict {
            Verdict::Refuse { error, .. } => error.into_owned(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn malformed_frames_are_refused_with_the_contract_texts() {
        assert_eq!(error_of(judge("{nope", Role::Seeker)), "invalid JSON");
        assert_eq!(error_of(judge("[nope", Role::Seeker)), "invalid JSON");
        assert_eq!(
            error_of(judge(r#"["ping"]"#, Role::Seeker)),
            "unknown message type"
        );
        assert_eq!(
            error_of(judge(r#" ["chat_message", "x"]"#, Role::Seeker)),
            "unknown message type"
        );
        assert_eq!(error_of(judge("42", Role::Seeker)), "unknown message type");
        assert_eq!(error_of(judge("{}", Role::Seeker)), "unknown message type");
        assert_eq!(
            error_of(judge(r#"{"type":"dance"}"#, Role::Seeker)),
            "unknown message type"
        );
        assert_eq!(
            error_of(judge(r#"{"type":"chat_message"}"#, Role::Seeker)),
            "session_id is required"
        );
        assert_eq!(
            error_of(judge(
                r#"{"type":"chat_message","session_id":"a.*.>"}"#,
                Role::Seeker
            )),
            "session not found"
        );
        assert_eq!(
            error_of(judge(r#"{"type":"message_read"}"#, Role::Seeker)),
            "message_id is required"
        );
        assert_eq!(
            error_of(judge(
                r#"{"type":"message_read","message_id":"x y"}"#,
                Role::Seeker
            )),
            "message not found"
        );
        assert!(
            error_of(judge(
                r#"{"type":"work_response","work_id":1}"#,
                Role::Seeker
            ))
            .contains("not allowed")
        );
        assert!(
            error_of(judge(
                r#"{"type":"work_response","work_id":"1.*"}"#,
                Role::Provider
            ))
            .contains("work_id")
        );
    }

    #[test]
    fn valid_frames_route_to_their_subjects() {
        let id = Uuid::new_v4();
        let frame = format!(r#"{{"type":"chat_message","session_id":"{id}","message":"hi"}}"#);
        assert_eq!(
            judge(&frame, Role::Seeker),
            Verdict::Publish {
                kind: FrameKind::ChatMessage,
                subject: format!("session.{id}.chat"),
                durable: true,
            }
        );
        let frame = format!(r#"{{"type":"location_update","session_id":"{id}"}}"#);
        assert!(matches!(
            judge(&frame, Role::Provider),
            Verdict::Publish { durable: false, .. }
        ));
        let frame = format!(r#"{{"type":"message_read","message_id":"{id}"}}"#);
        assert!(
            matches!(judge(&frame, Role::Provider), Verdict::Publish { subject, .. } if subject == format!("message.{id}.receipt"))
        );
        assert_eq!(judge(r#"{"type":"ping"}"#, Role::Provider), Verdict::Ping);
    }
}
