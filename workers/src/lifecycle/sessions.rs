//! `GET /api/sessions/{session_id}`: the snapshot, for participants only (404 for anyone else, the
//! same answer as for a session that does not exist). A mediator sees roles and the chat, never
//! the parties' mediums (their phone numbers; contract section 12).

use crate::api_server::Caller;
use shared::api::{ApiRequest, ApiResponse};
use shared::auth::Role;
use sqlx::PgPool;

pub async fn get(
    pool: &PgPool,
    presence: &async_nats::jetstream::kv::Store,
    caller: &Caller,
    request: ApiRequest,
) -> anyhow::Result<ApiResponse> {
    let Some(session_id) = request.uuid_id() else {
        return Ok(ApiResponse::not_found("session"));
    };
    let mut connection = pool.acquire().await?;
    let row = crate::session::load(&mut connection, session_id).await?;
    drop(connection);
    Ok(
        match row.and_then(|row| {
            row.role_of(&caller.user_id, caller.role)
                .map(|role| (row, role))
        }) {
            Some((row, role)) => {
                let mut snapshot = row.snapshot_with_presence(role, presence).await;
                if role == Role::Mediator {
                    snapshot.seeker_mediums = serde_json::Value::Null;
                    snapshot.provider_mediums = serde_json::Value::Null;
                }
                ApiResponse::ok(snapshot)
            }
            None => ApiResponse::not_found("session"),
        },
    )
}
