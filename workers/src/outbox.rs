//! Events a handler wants delivered, collected during its transaction and published to
//! `user.<id>.events` only after the commit (so nobody hears of a change that did not happen).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shared::frames::Event;
use shared::headers;

/// One frame for one user's sockets (or one socket), as stored in `handled_frames`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_id: Option<String>,
    /// Close all the user's sockets after this frame.
    #[serde(default)]
    pub close: bool,
    pub frame: String,
    /// A notice for other workers, published on this subject instead of the user's events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_subject: Option<String>,
}

impl Delivery {
    pub fn to_user(user_id: &str, event: &Event) -> Delivery {
        Delivery {
            user_id: user_id.to_owned(),
            conn_id: None,
            close: false,
            frame: event.to_json(),
            notice_subject: None,
        }
    }

    pub fn to_socket(user_id: &str, conn_id: &str, event: &Event) -> Delivery {
        Delivery {
            conn_id: Some(conn_id.to_owned()),
            ..Delivery::to_user(user_id, event)
        }
    }
}

#[derive(Default)]
pub struct Outbox {
    deliveries: Vec<Delivery>,
}

impl Outbox {
    /// To every socket of the user.
    pub fn to_user(&mut self, user_id: &str, event: &Event) {
        self.deliveries.push(Delivery::to_user(user_id, event));
    }

    /// To one socket only (the one a frame came from).
    pub fn to_socket(&mut self, user_id: &str, conn_id: &str, event: &Event) {
        self.deliveries
            .push(Delivery::to_socket(user_id, conn_id, event));
    }

    /// To every socket of the user, which the gateway then closes with 1000.
    pub fn to_user_then_close(&mut self, user_id: &str, event: &Event) {
        self.deliveries.push(Delivery {
            close: true,
            ..Delivery::to_user(user_id, event)
        });
    }

    /// Tells the other workers the session ended (`session.<id>.ended`).
    pub fn session_ended(&mut self, session_id: &uuid::Uuid) {
        self.deliveries.push(Delivery {
            user_id: String::new(),
            conn_id: None,
            close: false,
            frame: String::new(),
            notice_subject: Some(shared::subjects::session_ended(session_id)),
        });
    }

    pub fn into_deliveries(self) -> Vec<Delivery> {
        self.deliveries
    }
}

/// Publishes on core NATS; a user with no socket anywhere simply misses it (chat has `resume`).
pub async fn publish(nats: &async_nats::Client, deliveries: &[Delivery], trace_id: &str) {
    for delivery in deliveries {
        let mut nats_headers = async_nats::HeaderMap::new();
        nats_headers.insert(headers::TRACE_ID, trace_id);
        if let Some(conn_id) = &delivery.conn_id {
            nats_headers.insert(headers::CONN_ID, conn_id.as_str());
        }
        if delivery.close {
            nats_headers.insert(headers::CLOSE, "1");
        }
        let subject = match &delivery.notice_subject {
            Some(subject) => subject.clone(),
            None => shared::subjects::user_events(&delivery.user_id),
        };
        let payload = Bytes::from(delivery.frame.clone());
        if let Err(error) = nats
            .publish_with_headers(subject, nats_headers, payload)
            .await
        {
            tracing::warn!(%error, user_id = %delivery.user_id, "cannot publish an event");
        }
    }
}
