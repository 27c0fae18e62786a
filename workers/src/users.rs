//! Users exist from their first authenticated call (contract section 2): every entry point that
//! knows a caller records them here, cheaply when they are already known.

use shared::auth::Role;
use sqlx::PgExecutor;

pub async fn record<'e>(
    executor: impl PgExecutor<'e>,
    user_id: &str,
    role: Role,
    token_name: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (user_id, role, token_name) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET token_name = EXCLUDED.token_name
         WHERE EXCLUDED.token_name IS NOT NULL
           AND users.token_name IS DISTINCT FROM EXCLUDED.token_name",
    )
    .bind(user_id)
    .bind(role.as_str())
    .bind(token_name)
    .execute(executor)
    .await?;
    Ok(())
}
