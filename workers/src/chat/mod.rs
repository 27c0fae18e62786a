//! The chat worker: `start_chat`, `chat_message`, receipts, `resume` (JetStream, through the
//! shared runtime), `typing_indicator` (core NATS, state in the `typing` KV bucket) and the history
//! REST route. This file wires subjects and frame types to their modules.

mod chat_message;
mod history;
mod ordering;
mod receipts;
mod resume;
mod start_chat;
mod typing;

use crate::api_server::{self, ApiHandler, Caller};
use crate::outbox::Outbox;
use crate::runtime::{self, FrameError, FrameHandler, Inbound};
use shared::api::{ApiRequest, ApiResponse};
use shared::frames::{ClientFrame, Event};
use shared::subjects::{api, queue};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;

pub struct Chat {
    pub nats: async_nats::Client,
    pub pool: PgPool,
    pub typing: Arc<typing::Typing>,
    /// Per socket, the last chat frame this instance committed: lets `admit` skip the database
    /// read in the common case of one instance handling a socket's frames.
    pub applied: ordering::Applied,
}

impl Chat {
    pub async fn new(
        nats: async_nats::Client,
        pool: PgPool,
        typing_ttl: Duration,
    ) -> anyhow::Result<Chat> {
        let typing = Arc::new(typing::Typing::new(&nats, pool.clone(), typing_ttl).await?);
        Ok(Chat {
            nats,
            pool,
            typing,
            applied: ordering::Applied::default(),
        })
    }
}

impl FrameHandler for Chat {
    fn changes_state(&self, frame: &ClientFrame) -> bool {
        !matches!(frame, ClientFrame::Resume { .. })
    }

    async fn admit(&self, pool: &PgPool, inbound: &Inbound) -> Result<(), FrameError> {
        ordering::admit(pool, &self.applied, inbound).await
    }

    fn committed(&self, inbound: &Inbound) {
        self.applied.record(inbound);
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        inbound: &Inbound,
        frame: ClientFrame,
        outbox: &mut Outbox,
    ) -> Result<(), FrameError> {
        let sender = &inbound.sender;
        // A refusal of a chat-topic frame still counts as handled (`ordering::advance`), so the
        // socket's later frames are not held up.
        let kind = frame.kind();
        let client_message_id = match &frame {
            ClientFrame::ChatMessage {
                client_message_id: Some(serde_json::Value::String(id)),
                ..
            } => Some(id.clone()),
            _ => None,
        };
        let result = match frame {
            ClientFrame::StartChat { session_id } => {
                start_chat::handle(tx, sender, session_id, outbox).await
            }
            ClientFrame::ChatMessage {
                session_id,
                message,
                client_message_id,
            } => {
                chat_message::handle(
                    tx,
                    sender,
                    session_id,
                    message,
                    client_message_id,
                    &self.typing,
                    outbox,
                )
                .await
            }
            ClientFrame::Resume {
                session_id,
                last_seq,
            } => resume::handle(tx, sender, session_id, last_seq, outbox).await,
            ClientFrame::MessageDelivered {
                message_id,
                session_id,
            } => {
                receipts::handle(
                    tx,
                    sender,
                    message_id,
                    session_id,
                    receipts::Status::Delivered,
                    outbox,
                )
                .await
            }
            ClientFrame::MessageRead {
                message_id,
                session_id,
            } => {
                receipts::handle(
                    tx,
                    sender,
                    message_id,
                    session_id,
                    receipts::Status::Read,
                    outbox,
                )
                .await
            }
            other => Err(FrameError::refused(
                format!("{} is not handled by the chat worker", other.kind().name()),
                None,
            )),
        };
        if inbound.chat_frame.is_none() {
            return result;
        }
        match result {
            Err(FrameError::Refused { error, session_id }) => {
                let event = Event::Error {
                    error,
                    request_type: Some(kind.name().to_owned()),
                    session_id,
                    client_message_id,
                };
                outbox.to_socket(&sender.user_id, &sender.conn_id, &event);
                ordering::advance(tx, inbound).await?;
                Ok(())
            }
            Ok(()) => {
                ordering::advance(tx, inbound).await?;
                Ok(())
            }
            other => other,
        }
    }
}

impl ApiHandler for Chat {
    async fn handle(&self, subject: &str, caller: Caller, request: ApiRequest) -> ApiResponse {
        let result = match subject {
            api::MESSAGES_LIST => history::list(&self.pool, &caller, request).await,
            _ => Ok(ApiResponse::not_found("route")),
        };
        result.unwrap_or_else(|error| {
            tracing::error!(%error, subject, "REST call failed");
            ApiResponse::error(503, "temporarily unavailable, please retry")
        })
    }
}

pub async fn run(chat: Chat, concurrency: usize) -> anyhow::Result<()> {
    let chat = Arc::new(chat);
    let (nats, pool) = (chat.nats.clone(), chat.pool.clone());
    tokio::select! {
        result = runtime::run_consumer(nats.clone(), pool, "chat", concurrency, chat.clone()) => result,
        result = api_server::serve(nats.clone(), &[api::MESSAGES_LIST], queue::CHAT, chat.clone()) => result,
        result = typing::serve(nats, chat.clone()) => result,
    }
}
