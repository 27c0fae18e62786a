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
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const GAP_WAIT: Duration = Duration::from_secs(30);

/// Entries kept in [`Applied`] before it starts over (it is only a hint).
const APPLIED_CAPACITY: usize = 100_000;

/// This instance's memory of the last chat frame it committed per socket. A hit means the
/// predecessor is certainly applied; a miss falls back to the shared cursor in Postgres.
#[derive(Default)]
pub struct Applied(Mutex<HashMap<String, i64>>);

impl Applied {
    pub fn record(&self, inbound: &Inbound) {
        let (Some(number), Ok(mut applied)) = (inbound.chat_frame, self.0.lock()) else {
            return;
        };
        if applied.len() >= APPLIED_CAPACITY {
            applied.clear();
        }
        let last = applied.entry(inbound.sender.conn_id.clone()).or_insert(0);
        *last = (*last).max(number);
    }

    fn knows_predecessor(&self, inbound: &Inbound, number: i64) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|applied| applied.get(&inbound.sender.conn_id).copied())
            .is_some_and(|last| last >= number - 1)
    }
}

/// Checks, before any transaction, that this frame is its socket's next one (or that waiting is
/// over). Frames of one session are handled one at a time, so the cursor cannot move backwards
/// between this read and the frame's commit.
pub async fn admit(pool: &PgPool, applied: &Applied, inbound: &Inbound) -> Result<(), FrameError> {
    let Some(number) = inbound.chat_frame else {
        return Ok(());
    };
    if number == 1 || applied.knows_predecessor(inbound, number) {
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
