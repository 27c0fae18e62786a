//! Answers REST calls forwarded by the gateway as NATS requests (`api.<resource>.<verb>`), in the
//! worker kind's queue group so each call is answered by exactly one instance.

use futures::StreamExt;
use shared::api::{ApiRequest, ApiResponse};
use shared::auth::Role;
use shared::headers;
use std::future::Future;
use std::sync::Arc;

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
    while let Some(message) = requests.next().await {
        let (nats, handler) = (nats.clone(), handler.clone());
        tokio::spawn(async move {
            let Some(reply) = message.reply.clone() else {
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
            let payload = serde_json::to_vec(&response).unwrap_or_default();
            if let Err(error) = nats.publish(reply, payload.into()).await {
                tracing::warn!(%error, "cannot answer a REST call");
            }
        });
    }
    Ok(())
}
