//! `user.<id>.connected`: the gateway announces each socket that opens (and every socket again
//! after its NATS connection comes back). Several worker kinds answer it (lifecycle replays pending
//! work orders, chat re-sends undelivered messages), each in its own queue group; this reads the
//! notice once for all of them, and `session.<id>.joined` (a Socket.IO socket joined a room),
//! which names a socket the same way.

use futures::StreamExt;
use shared::auth::Role;
use shared::headers;
use shared::subjects::USERS_CONNECTED;
use std::future::Future;

/// The socket a notice announces.
pub struct Connected {
    pub user_id: String,
    pub role: Role,
    pub conn_id: String,
    /// The token's `name`, if it had one.
    pub name: Option<String>,
}

impl Connected {
    fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Option<Connected> {
        let headers = headers?;
        let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        Some(Connected {
            user_id: header(headers::USER_ID)?,
            role: Role::parse(&header(headers::ROLE)?)?,
            conn_id: header(headers::CONN_ID)?,
            name: header(headers::USER_NAME),
        })
    }
}

/// Notices answered at once by one process; the rest wait in the subscription. After a NATS
/// restart every gateway announces all its sockets again: tens of thousands at once, answered
/// at this pace on the process's REST pool, never on the frame runtime's connections.
const IN_FLIGHT: usize = 16;

/// Answers every notice with `answer` in queue group `queue`, at most `IN_FLIGHT` at a time. Core
/// NATS: a lost notice is made good by the next connection.
pub async fn serve<F, Answer>(
    nats: async_nats::Client,
    queue: &str,
    answer: F,
) -> anyhow::Result<()>
where
    F: Fn(Connected) -> Answer + Clone + Send + 'static,
    Answer: Future<Output = ()> + Send + 'static,
{
    serve_notices(nats, USERS_CONNECTED, queue, move |connected, _| {
        answer.clone()(connected)
    })
    .await
}

/// Answers every notice on `subject` (a wildcard) that names a socket as `user.<id>.connected`
/// does, with the notice's own subject (`session.<id>.joined` names its session there); bounded
/// like `serve`.
pub async fn serve_notices<F, Answer>(
    nats: async_nats::Client,
    subject: &'static str,
    queue: &str,
    answer: F,
) -> anyhow::Result<()>
where
    F: Fn(Connected, &str) -> Answer + Clone + Send + 'static,
    Answer: Future<Output = ()> + Send + 'static,
{
    let mut notices = nats.queue_subscribe(subject, queue.to_owned()).await?;
    let turns = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    while let Some(notice) = notices.next().await {
        if let Some(connected) = Connected::from_headers(notice.headers.as_ref()) {
            let Ok(turn) = turns.clone().acquire_owned().await else {
                break;
            };
            let answered = answer.clone()(connected, notice.subject.as_str());
            tokio::spawn(async move {
                answered.await;
                drop(turn);
            });
        }
    }
    Ok(())
}
