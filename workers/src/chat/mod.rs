//! The chat worker: `start_chat`, `chat_message`, receipts, `resume` (JetStream, through the
//! shared runtime), `typing_indicator` (core NATS, state in the `typing` KV bucket), the re-sending
//! of undelivered messages to a socket that connects or a Socket.IO socket that joins a session's
//! room (`connected`; pages aimed at one socket are bounded by `page`) and the history REST route.
//! This file wires subjects and frame types to their modules.

mod batch;
mod chat_message;
mod connected;
mod conversations;
mod history;
mod page;
mod read_up_to;
mod receipts;
mod resume;
mod start_chat;
mod stored;
mod typing;

use crate::api_server::{self, ApiHandler, Caller};
use crate::outbox::Outbox;
use crate::runtime::{self, BatchHandler, Frame, FrameError};
use batch::ChatBatch;
use shared::api::{ApiRequest, ApiResponse};
use shared::config::WorkerConfig;
use shared::frames::ClientFrame;
use shared::subjects::{api, queue};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Chat {
    pub nats: async_nats::Client,
    pub pool: PgPool,
    pub typing: Arc<typing::Typing>,
    /// The presence bucket, for the snapshot `resume` answers with.
    pub presence: async_nats::jetstream::kv::Store,
}

impl Chat {
    pub async fn new(
        nats: async_nats::Client,
        pool: PgPool,
        typing_ttl: Duration,
    ) -> anyhow::Result<Chat> {
        let typing = typing::Typing::new(&nats, pool.clone(), typing_ttl).await?;
        let presence = crate::lifecycle::presence::open(&nats).await?;
        Ok(Chat {
            nats,
            pool,
            typing,
            presence,
        })
    }
}

impl BatchHandler for Chat {
    async fn apply(
        &self,
        tx: &mut PgConnection,
        frames: Vec<Frame>,
        outbox: &mut Outbox,
    ) -> Result<(), FrameError> {
        let mut batch = ChatBatch::load(tx, &frames).await?;
        for Frame { inbound, frame } in frames {
            outbox.begin_frame(&inbound);
            let sender = &inbound.sender;
            let client_message_id = frame.client_message_id();
            let result = match frame {
                ClientFrame::StartChat { session_id } => {
                    start_chat::handle(tx, &mut batch, sender, session_id, outbox).await
                }
                ClientFrame::ChatMessage {
                    session_id,
                    message,
                    client_message_id,
                    kind_fields,
                } => {
                    let draft = chat_message::Draft {
                        message,
                        client_message_id,
                        kind_fields: *kind_fields,
                    };
                    chat_message::handle(tx, &mut batch, sender, session_id, draft, outbox).await
                }
                ClientFrame::MessagesRead {
                    session_id,
                    up_to_seq,
                } => {
                    read_up_to::handle(tx, &mut batch, sender, session_id, up_to_seq, outbox).await
                }
                ClientFrame::Resume {
                    session_id,
                    last_seq,
                } => {
                    let page = resume::Page {
                        session_id,
                        last_seq,
                    };
                    resume::handle(tx, &mut batch, sender, page, &self.presence, outbox).await
                }
                ClientFrame::MessageDelivered {
                    message_id,
                    session_id,
                } => receipts::handle(
                    &mut batch,
                    sender,
                    message_id,
                    session_id,
                    receipts::Status::Delivered,
                    outbox,
                ),
                ClientFrame::MessageRead {
                    message_id,
                    session_id,
                } => receipts::handle(
                    &mut batch,
                    sender,
                    message_id,
                    session_id,
                    receipts::Status::Read,
                    outbox,
                ),
                other => Err(FrameError::refused(
                    format!("{} is not handled by the chat worker", other.kind().name()),
                    None,
                )),
            };
            match result {
                Ok(()) => {}
                // Every refusal is decided before anything is queued or written.
                Err(FrameError::Refused { error, session_id }) => {
                    outbox.refuse(&inbound, error, session_id, client_message_id);
                }
                Err(other) => return Err(other),
            }
        }
        batch.flush(tx).await?;
        self.typing
            .clear_in_background(std::mem::take(&mut batch.typing_clears));
        Ok(())
    }
}

impl ApiHandler for Chat {
    async fn handle(&self, subject: &str, caller: Caller, request: ApiRequest) -> ApiResponse {
        let result = match subject {
            api::MESSAGES_LIST => history::list(&self.pool, &caller, request).await,
            api::SESSIONS_READ => {
                read_up_to::over_rest(&self.nats, &self.pool, &caller, request).await
            }
            api::CONVERSATIONS_LIST => conversations::list(&self.pool, &caller, request).await,
            _ => Ok(ApiResponse::not_found("route")),
        };
        result.unwrap_or_else(|error| {
            tracing::error!(%error, subject, "REST call failed");
            ApiResponse::error(503, "temporarily unavailable, please retry")
        })
    }
}

pub async fn run(
    chat: Chat,
    config: WorkerConfig,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let chat = Arc::new(chat);
    let (nats, pool) = (chat.nats.clone(), chat.pool.clone());
    tokio::select! {
        result = runtime::run(nats.clone(), pool, "chat", config, chat.clone(), stopping) => result,
        result = api_server::serve(
            nats.clone(),
            &[api::MESSAGES_LIST, api::SESSIONS_READ, api::CONVERSATIONS_LIST],
            queue::CHAT,
            chat.clone(),
        ) => result,
        result = connected::serve(nats.clone(), chat.pool.clone()) => result,
        result = typing::serve(nats, chat.clone()) => result,
    }
}
