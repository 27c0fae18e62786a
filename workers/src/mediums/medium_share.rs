//! `medium_share` from the provider, in `waiting` or `active`: stores the mediums, answers
//! `mediums_shared` and tells the seeker `provider_mediums_shared`. The state does not change.

use crate::outbox::Outbox;
use crate::runtime::{FrameError, Sender};
use crate::session;
use serde_json::Value;
use shared::auth::Role;
use shared::frames::Event;
use sqlx::PgConnection;
use uuid::Uuid;

pub async fn handle(
    tx: &mut PgConnection,
    sender: &Sender,
    session_id: Uuid,
    mediums: Option<Value>,
    outbox: &mut Outbox,
) -> Result<(), FrameError> {
    let (row, _) = session::participant(session::load_for_update(tx, session_id).await?, sender)?;
    session::require_live(&row)?;
    let mediums = super::validate(mediums, session_id)?;
    sqlx::query(
        "UPDATE work_sessions SET provider_selected_mediums = $2, mediums_shared_at = now() WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(&mediums)
    .execute(&mut *tx)
    .await?;
    let timestamp = shared::time::now();
    outbox.to_user(
        row.user_of(Role::Provider),
        &Event::MediumsShared {
            session_id,
            mediums: mediums.clone(),
            timestamp: timestamp.clone(),
        },
    );
    outbox.to_user(
        row.user_of(Role::Seeker),
        &Event::ProviderMediumsShared {
            session_id,
            mediums,
            timestamp,
        },
    );
    Ok(())
}
