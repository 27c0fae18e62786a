//! Events a handler wants delivered, collected during its batch's transaction and published to
//! `user.<id>.events` only after the commit (so nobody hears of a change that did not happen).

use crate::runtime::Inbound;
use bytes::Bytes;
use shared::frames::Event;
use shared::headers;
use std::sync::Arc;
use uuid::Uuid;

/// One frame for one user's sockets (or one socket).
#[derive(Clone, Debug)]
pub struct Delivery {
    pub user_id: String,
    pub conn_id: Option<String>,
    /// Close all the user's sockets after this frame.
    pub close: bool,
    pub frame: String,
    /// A notice for other workers, published on this subject instead of the user's events.
    pub notice_subject: Option<String>,
    /// The `trace-id` of the inbound frame that caused it.
    pub trace_id: Arc<str>,
    /// The `INBOUND` partition of that frame (a transaction may hold several partitions' frames;
    /// each partition acks and publishes its own).
    pub partition: u32,
}

impl Delivery {
    pub fn to_user(user_id: &str, event: &Event) -> Delivery {
        Delivery {
            user_id: user_id.to_owned(),
            conn_id: None,
            close: false,
            frame: event.to_json(),
            notice_subject: None,
            trace_id: Arc::from(""),
            partition: 0,
        }
    }

    pub fn to_socket(user_id: &str, conn_id: &str, event: &Event) -> Delivery {
        Delivery {
            conn_id: Some(conn_id.to_owned()),
            ..Delivery::to_user(user_id, event)
        }
    }
}

/// The events of one batch, each tagged with the trace id of the frame being handled when it was
/// added (`begin_frame`).
#[derive(Default)]
pub struct Outbox {
    deliveries: Vec<Delivery>,
    trace_id: Option<Arc<str>>,
    partition: u32,
}

impl Outbox {
    /// The events added from now on were caused by `inbound`.
    pub fn begin_frame(&mut self, inbound: &Inbound) {
        self.trace_id = Some(inbound.trace_id.clone());
        self.partition = inbound.partition;
    }

    pub fn push(&mut self, mut delivery: Delivery) {
        if let Some(trace_id) = &self.trace_id {
            delivery.trace_id = trace_id.clone();
        }
        delivery.partition = self.partition;
        self.deliveries.push(delivery);
    }

    /// To every socket of the user.
    pub fn to_user(&mut self, user_id: &str, event: &Event) {
        self.push(Delivery::to_user(user_id, event));
    }

    /// To one socket only (the one a frame came from).
    pub fn to_socket(&mut self, user_id: &str, conn_id: &str, event: &Event) {
        self.push(Delivery::to_socket(user_id, conn_id, event));
    }

    /// To every socket of the user, which the gateway then closes with 1000.
    pub fn to_user_then_close(&mut self, user_id: &str, event: &Event) {
        self.push(Delivery {
            close: true,
            ..Delivery::to_user(user_id, event)
        });
    }

    /// The error frame of contract section 4, to the socket the frame came from only.
    pub fn refuse(
        &mut self,
        inbound: &Inbound,
        error: String,
        session_id: Option<Uuid>,
        client_message_id: Option<String>,
    ) {
        let event = Event::Error {
            error,
            request_type: inbound.request_type.clone(),
            session_id,
            client_message_id,
        };
        self.deliveries.push(Delivery {
            trace_id: inbound.trace_id.clone(),
            partition: inbound.partition,
            ..Delivery::to_socket(&inbound.sender.user_id, &inbound.sender.conn_id, &event)
        });
    }

    /// Tells the other workers the session ended (`session.<id>.ended`).
    pub fn session_ended(&mut self, session_id: &Uuid) {
        self.push(Delivery {
            user_id: String::new(),
            conn_id: None,
            close: false,
            frame: String::new(),
            notice_subject: Some(shared::subjects::session_ended(session_id)),
            trace_id: Arc::from(""),
            partition: 0,
        });
    }

    pub fn len(&self) -> usize {
        self.deliveries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Drops the events added since the outbox held `len` of them (a frame rolled back).
    pub fn truncate(&mut self, len: usize) {
        self.deliveries.truncate(len);
    }

    pub fn into_deliveries(self) -> Vec<Delivery> {
        self.deliveries
    }
}

/// Publishes a batch's events on core NATS, in order; a user with no socket anywhere simply
/// misses them (chat has `resume`).
pub async fn publish_all(nats: &async_nats::Client, deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        let subject = match &delivery.notice_subject {
            Some(subject) => subject.clone(),
            None => shared::subjects::user_events(&delivery.user_id),
        };
        let headers = event_headers(&delivery, "");
        if let Err(error) = nats
            .publish_with_headers(subject, headers, Bytes::from(delivery.frame))
            .await
        {
            tracing::warn!(%error, user_id = %delivery.user_id, "cannot publish an event");
        }
    }
}

/// Publishes events outside the runtime (typing, distance, REST side effects), tagged with
/// `trace_id` unless they carry their own.
pub async fn publish(nats: &async_nats::Client, deliveries: &[Delivery], trace_id: &str) {
    publish_all(
        nats,
        deliveries
            .iter()
            .map(|delivery| {
                let mut delivery = delivery.clone();
                if delivery.trace_id.is_empty() {
                    delivery.trace_id = Arc::from(trace_id);
                }
                delivery
            })
            .collect(),
    )
    .await;
}

fn event_headers(delivery: &Delivery, fallback_trace_id: &str) -> async_nats::HeaderMap {
    let mut nats_headers = async_nats::HeaderMap::new();
    let trace_id = if delivery.trace_id.is_empty() {
        fallback_trace_id
    } else {
        &delivery.trace_id
    };
    if !trace_id.is_empty() {
        nats_headers.insert(headers::TRACE_ID, trace_id);
    }
    if let Some(conn_id) = &delivery.conn_id {
        nats_headers.insert(headers::CONN_ID, conn_id.as_str());
    }
    if delivery.close {
        nats_headers.insert(headers::CLOSE, "1");
    }
    nats_headers
}
