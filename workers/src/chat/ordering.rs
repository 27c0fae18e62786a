//! Keeps a sender's chat frames in the order they were sent, even with several chat instances.
//!
//! Within one instance, a session's frames are handled one after another (runtime lanes). Across
//! instances, two frames of one socket could be pulled by different instances and race. The
//! gateway numbers each socket's `session.<id>.chat` frames (`chat-frame` header: 1, 2, ...); here
//! a frame is admitted only when the socket's previous frame has been handled, and otherwise
//! redelivered a moment later. The gateway only moves to the next number once a publish is
//! acknowledged, so numbers have no gaps; `GAP_WAIT` (much longer than the consumer's `ack_wait`,
//! so frames stranded on a crashed instance come back in time) only bounds the wait should a number
//! ever be lost, so a socket's chat can never be stuck for good.
//!
//! Cost: with several instances a frame that overtakes its predecessor is re-queued (10 ms) until
//! the predecessor commits; one instance never pays it.

use crate::runtime::{FrameError, Inbound};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;

const GAP_WAIT: Duration = Duration::from_secs(30);

/// Checks, before any transaction, that this frame is its socket's next one (or that waiting is
/// over). Frames of one session are handled one at a time, so the cursor cannot move backwards
/// between this read and the frame's commit.
pub async fn admit(pool: &PgPool, inbound: &Inbound) -> Result<(), FrameError> {
    let Some(number) = inbound.chat_frame else {
        return Ok(());
    };
    if number == 1 {
        return Ok(());
    }
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last_frame FROM chat_send_cursors WHERE conn_id = $1")
            .bind(&inbound.sender.conn_id)
            .fetch_optional(pool)
            .await?;
    let last = last.unwrap_or(0);
    let waited = chrono::Utc::now() - inbound.stored_at;
    if number > last + 1 && waited.to_std().unwrap_or_default() < GAP_WAIT {
        return Err(FrameError::NotYet);
    }
    Ok(())
}

/// Records this frame as handled for its socket.
pub async fn advance(tx: &mut PgConnection, inbound: &Inbound) -> Result<(), sqlx::Error> {
    let Some(number) = inbound.chat_frame else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO chat_send_cursors (conn_id, last_frame) VALUES ($1, $2)
         ON CONFLICT (conn_id) DO UPDATE
         SET last_frame = GREATEST(chat_send_cursors.last_frame, EXCLUDED.last_frame), updated_at = now()",
    )
    .bind(&inbound.sender.conn_id)
    .bind(number)
    .execute(tx)
    .await?;
    Ok(())
}
