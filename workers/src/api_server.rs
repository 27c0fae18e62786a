//! Answers REST calls forwarded by the gateway as NATS requests (`api.<resource>.<verb>`), in the
//! worker kind's queue group so each call is answered by exactly one instance.
//!
//! Bounded: at most `IN_FLIGHT` calls run at once on the process's REST pool (never the frame
//! runtime's connections) and at most `WAITING` wait for a turn; a call that cannot start within
//! `START_WITHIN` (or finds the queue full) is answered 503 at once, which the gateway passes on
//! with `Retry-After`, rather than queueing work nobody waits for any more.

use futures::StreamExt;
use shared::api::{ApiRequest, ApiResponse};
use shared::auth::Role;
use shared::headers;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// REST calls one process runs at once.
const IN_FLIGHT: usize = 32;
/// REST calls that may wait for a turn; more are shed at once.
const WAITING: usize = 512;
/// A call not started within this is shed: the gateway gives up on it after 5 s.
const START_WITHIN: Duration = Duration::from_secs(3);
/// Said to a caller whose call was shed.
pub const BUSY: &str = "busy, please retry";

/// The authenticated caller of a REST call.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: String,
    pub role: Role,
    pub name: Option<String>,
}

/// One worker kind's REST routes: a `match` from subject to handler module.
pub trait ApiHandler: Send + Sync + 'static {
    fn handle(
        &self,
        subject: &str,
        caller: Caller,
        request: ApiRequest,
    ) -> impl Future<Output = ApiResponse> + Send;
}

fn caller_of(message: &async_nats::Message) -> Option<Caller> {
    let headers = message.headers.as_ref()?;
    Some(Caller {
        user_id: headers.get(headers::USER_ID)?.as_str().to_owned(),
        role: Role::parse(headers.get(headers::ROLE)?.as_str())?,
        name: headers
            .get(headers::USER_NAME)
            .map(|name| name.as_str().to_owned()),
    })
}

/// Serves `subjects` until the process stops; each request runs in its own task.
pub async fn serve<H: ApiHandler>(
    nats: async_nats::Client,
    subjects: &[&'static str],
    queue_group: &'static str,
    handler: Arc<H>,
) -> anyhow::Result<()> {
    let mut subscriptions = Vec::new();
    for subject in subjects {
        subscriptions.push(
            nats.queue_subscribe(*subject, queue_group.to_owned())
                .await?,
        );
    }
    let mut requests = futures::stream::select_all(subscriptions);
    let turns = Arc::new(Semaphore::new(IN_FLIGHT));
    let waiting = Arc::new(AtomicUsize::new(0));
    let shed = metrics::counter!("worker_rest_shed_total", "kind" => queue_group);
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply.clone() else {
            continue;
        };
        if waiting.load(Ordering::Relaxed) >= WAITING {
            shed.increment(1);
            answer(&nats, reply, &ApiResponse::error(503, BUSY)).await;
            continue;
        }
        waiting.fetch_add(1, Ordering::Relaxed);
        let (nats, handler, turns, waiting, shed) = (
            nats.clone(),
            handler.clone(),
            turns.clone(),
            waiting.clone(),
            shed.clone(),
        );
        tokio::spawn(async move {
            let turn = tokio::time::timeout(START_WITHIN, turns.acquire_owned()).await;
            waiting.fetch_sub(1, Ordering::Relaxed);
            let Ok(Ok(_turn)) = turn else {
                shed.increment(1);
                answer(&nats, reply, &ApiResponse::error(503, BUSY)).await;
                return;
            };
            let response = match (
                caller_of(&message),
                serde_json::from_slice::<ApiRequest>(&message.payload),
            ) {
                (Some(caller), Ok(request)) => {
                    handler
                        .handle(message.subject.as_str(), caller, request)
                        .await
                }
                _ => ApiResponse::error(400, "malformed request"),
            };
            answer(&nats, reply, &response).await;
        });
    }
    Ok(())
}

async fn answer(nats: &async_nats::Client, reply: async_nats::Subject, response: &ApiResponse) {
    let payload = serde_json::to_vec(response).unwrap_or_default();
    if let Err(error) = nats.publish(reply, payload.into()).await {
        tracing::warn!(%error, "cannot answer a REST call");
    }
}
