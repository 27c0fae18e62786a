//! `medium_selection` from the seeker: stores the selection, moves a `waiting` session to
//! `active`, answers `mediums_selected` and tells the provider `seeker_mediums_selected`. It may be
//! sent again to change the selection.

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
    let state: String = sqlx::query_scalar(
        "UPDATE work_sessions SET seeker_selected_mediums = $2, connection_state = 'active'
         WHERE session_id = $1 RETURNING connection_state",
    )
    .bind(session_id)
    .bind(&mediums)
    .fetch_one(&mut *tx)
    .await?;
    let timestamp = shared::time::now();
    outbox.to_user(
        row.user_of(Role::Seeker),
        &Event::MediumsSelected {
            session_id,
            mediums: mediums.clone(),
            connection_state: state.clone(),
            timestamp: timestamp.clone(),
        },
    );
    outbox.to_user(
        row.user_of(Role::Provider),
        &Event::SeekerMediumsSelected {
            session_id,
            mediums,
            connection_state: state,
            message: String::from("Seeker has selected communication mediums"),
            timestamp,
        },
    );
    Ok(())
}
