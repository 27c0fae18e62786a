//! The lifecycle worker: profiles and search statuses (REST), work orders and their answers,
//! session creation, cancel and finish. This file wires subjects to handlers; each message type
//! has its own module.

mod cancel_connection;
mod connected;
mod disputes;
mod finish_service;
pub mod presence;
mod profile;
mod search_status;
mod sessions;
mod text;
mod work_assigned;
mod work_orders;
mod work_response;

use crate::api_server::{self, ApiHandler, Caller};
use crate::outbox::Outbox;
use crate::runtime::{self, FrameError, FrameHandler, Inbound, OneByOne};
use shared::api::{ApiRequest, ApiResponse};
use shared::config::WorkerConfig;
use shared::frames::ClientFrame;
use shared::subjects::{api, queue};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub struct Lifecycle {
    pub nats: async_nats::Client,
    pub pool: PgPool,
    /// How long chat messages are kept after a session ends.
    pub chat_retention: Duration,
    /// The presence bucket (section 8).
    pub presence: async_nats::jetstream::kv::Store,
    /// How long a participant's last socket stays closed before they count as offline.
    pub presence_grace: Duration,
    /// Pending work orders one seeker may hold in all (one more is 409).
    pub work_order_max_pending: i64,
}

impl FrameHandler for Lifecycle {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        inbound: &Inbound,
        frame: ClientFrame,
        outbox: &mut Outbox,
    ) -> Result<(), FrameError> {
        let sender = &inbound.sender;
        match frame {
            ClientFrame::WorkResponse { work_id, accepted } => {
                work_response::handle(tx, sender, work_id, accepted, outbox).await
            }
            ClientFrame::CancelConnection { session_id } => {
                cancel_connection::handle(tx, sender, session_id, self.chat_retention, outbox).await
            }
            ClientFrame::FinishService {
                session_id,
                rating_stars,
                rating_description,
            } => {
                let rating = finish_service::Rating::from_frame(rating_stars, rating_description);
                finish_service::handle(tx, sender, session_id, rating, self.chat_retention, outbox)
                    .await
            }
            other => Err(FrameError::refused(
                format!(
                    "{} is not handled by the lifecycle worker",
                    other.kind().name()
                ),
                None,
            )),
        }
    }
}

impl ApiHandler for Lifecycle {
    async fn handle(&self, subject: &str, caller: Caller, request: ApiRequest) -> ApiResponse {
        let result = match subject {
            api::PROFILE_GET => profile::get(&self.pool, &caller).await,
            api::PROFILE_PUT => profile::put(&self.pool, &caller, request).await,
            api::PROVIDER_STATUS_GET => search_status::get_provider(&self.pool, &caller).await,
            api::PROVIDER_STATUS_PUT => {
                search_status::put_provider(&self.pool, &caller, request).await
            }
            api::SEEKER_SEARCH_GET => search_status::get_seeker(&self.pool, &caller).await,
            api::SEEKER_SEARCH_PUT => search_status::put_seeker(&self.pool, &caller, request).await,
            api::WORK_ORDERS_CREATE => work_orders::create(self, &caller, request).await,
            api::WORK_ORDERS_GET => work_orders::get(&self.pool, &caller, request).await,
            api::SESSIONS_GET => sessions::get(&self.pool, &self.presence, &caller, request).await,
            api::DISPUTES_OPEN => disputes::open(self, &caller, request).await,
            api::DISPUTES_LIST => disputes::list(self, &caller, request).await,
            api::DISPUTES_GET => disputes::get(self, &caller, request).await,
            api::DISPUTES_JOIN => disputes::join(self, &caller, request).await,
            api::DISPUTES_RESOLVE => disputes::resolve(self, &caller, request).await,
            _ => Ok(ApiResponse::not_found("route")),
        };
        result.unwrap_or_else(|error| {
            tracing::error!(%error, subject, "REST call failed");
            ApiResponse::error(503, "temporarily unavailable, please retry")
        })
    }
}

/// Runs every part of the lifecycle worker until one stops.
pub async fn run(
    lifecycle: Lifecycle,
    config: WorkerConfig,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let frames = Arc::new(OneByOne(lifecycle.clone()));
    let lifecycle = Arc::new(lifecycle);
    let (nats, pool) = (lifecycle.nats.clone(), lifecycle.pool.clone());
    tokio::select! {
        result = runtime::run(nats.clone(), pool.clone(), "lifecycle", config, frames, stopping) => result,
        result = api_server::serve(nats.clone(), &[
            api::PROFILE_GET, api::PROFILE_PUT,
            api::PROVIDER_STATUS_GET, api::PROVIDER_STATUS_PUT,
            api::SEEKER_SEARCH_GET, api::SEEKER_SEARCH_PUT,
            api::WORK_ORDERS_CREATE, api::WORK_ORDERS_GET,
            api::SESSIONS_GET,
            api::DISPUTES_OPEN, api::DISPUTES_LIST, api::DISPUTES_GET,
            api::DISPUTES_JOIN, api::DISPUTES_RESOLVE,
        ], queue::LIFECYCLE, lifecycle.clone()) => result,
        result = connected::serve(nats.clone(), pool.clone()) => result,
        result = presence::serve(nats, pool, lifecycle.presence.clone(), lifecycle.presence_grace) => result,
    }
}
