//! The mediums worker: the seeker's `medium_selection` (which makes a waiting session active) and
//! the provider's `medium_share`. This file wires frame types to handlers and validates mediums.

mod medium_selection;
mod medium_share;

use crate::outbox::Outbox;
use crate::runtime::{self, FrameError, FrameHandler, Inbound, OneByOne};
use serde_json::Value;
use shared::config::WorkerConfig;
use shared::frames::{ClientFrame, errors};
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

pub struct Mediums;

impl FrameHandler for Mediums {
    async fn handle(
        &self,
        tx: &mut PgConnection,
        inbound: &Inbound,
        frame: ClientFrame,
        outbox: &mut Outbox,
    ) -> Result<(), FrameError> {
        match frame {
            ClientFrame::MediumSelection {
                session_id,
                mediums,
            } => medium_selection::handle(tx, &inbound.sender, session_id, mediums, outbox).await,
            ClientFrame::MediumShare {
                session_id,
                mediums,
            } => medium_share::handle(tx, &inbound.sender, session_id, mediums, outbox).await,
            other => Err(FrameError::refused(
                format!(
                    "{} is not handled by the mediums worker",
                    other.kind().name()
                ),
                None,
            )),
        }
    }
}

pub async fn run(
    nats: async_nats::Client,
    pool: PgPool,
    config: WorkerConfig,
    stopping: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let handler = Arc::new(OneByOne(Mediums));
    runtime::run(nats, pool, "mediums", config, handler, stopping).await
}

const MEDIUM_KEYS: [&str; 3] = ["telegram", "whatsapp", "call"];

/// 0-3 entries with keys from {telegram, whatsapp, call} and 10-digit string values; anything else
/// gets the seed's error text.
pub fn validate(mediums: Option<Value>, session_id: Uuid) -> Result<Value, FrameError> {
    let invalid = || FrameError::refused(errors::INVALID_MEDIUMS, Some(session_id));
    let Some(Value::Object(map)) = mediums else {
        return Err(invalid());
    };
    if map.len() > MEDIUM_KEYS.len() {
        return Err(invalid());
    }
    for (key, value) in &map {
        let is_number = value
            .as_str()
            .is_some_and(|number| number.len() == 10 && number.bytes().all(|b| b.is_ascii_digit()));
        if !MEDIUM_KEYS.contains(&key.as_str()) || !is_number {
            return Err(invalid());
        }
    }
    Ok(Value::Object(map))
}
