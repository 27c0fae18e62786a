//! One batch of one partition, in one transaction: lock the partition's cursor, skip what it says
//! is applied, let the handler apply the rest, advance the cursor, commit. The cursor row is the
//! fence against redeliveries and stale owners: whichever owner commits first moves it, and the
//! other's copies of those frames are skipped.

use super::{BatchHandler, Frame, FrameError};
use crate::outbox::Outbox;
use sqlx::{PgConnection, PgPool};

/// How a failed batch failed.
#[derive(Debug)]
pub enum Failure {
    /// Postgres is unreachable or refusing connections: stop pulling until it answers.
    Unavailable(String),
    /// A frame's text (or another value) is one Postgres will never store: refuse it.
    Content(String),
    /// Anything else (a constraint, a deadlock, a bug): retry with backoff, then dead-letter.
    Failed(String),
}

impl Failure {
    pub fn of(error: &FrameError) -> Failure {
        match error {
            FrameError::Database(error) => classify(error),
            FrameError::Retry(error) => Failure::Failed(format!("{error:#}")),
            FrameError::Refused { error, .. } => Failure::Content(error.clone()),
        }
    }
}

fn classify(error: &sqlx::Error) -> Failure {
    let text = error.to_string();
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => Failure::Unavailable(text),
        sqlx::Error::Database(database) => match database.code().as_deref() {
            // connection exceptions, shutting down, cannot connect now, too many connections
            Some(code) if code.starts_with("08") || code.starts_with("57P") || code == "53300" => {
                Failure::Unavailable(text)
            }
            // data exceptions: a value Postgres refuses (U+0000 in text, out-of-range numbers)
            Some(code) if code.starts_with("22") => Failure::Content(text),
            _ => Failure::Failed(text),
        },
        _ => Failure::Failed(text),
    }
}

/// Makes sure every partition of `kind` has its cursor row.
pub async fn create_cursors(pool: &PgPool, kind: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO partition_cursors (kind, partition)
         SELECT $1, generate_series(0, $2 - 1) ON CONFLICT DO NOTHING",
    )
    .bind(kind)
    .bind(shared::subjects::PARTITIONS as i32)
    .execute(pool)
    .await?;
    Ok(())
}

async fn lock_cursor(
    tx: &mut PgConnection,
    kind: &str,
    partition: u32,
) -> Result<u64, sqlx::Error> {
    let applied: i64 = sqlx::query_scalar(
        "SELECT applied_seq FROM partition_cursors WHERE kind = $1 AND partition = $2 FOR UPDATE",
    )
    .bind(kind)
    .bind(partition as i32)
    .fetch_one(&mut *tx)
    .await?;
    Ok(applied.max(0) as u64)
}

async fn advance_cursor(
    tx: &mut PgConnection,
    kind: &str,
    partition: u32,
    applied: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE partition_cursors SET applied_seq = $3, updated_at = now()
         WHERE kind = $1 AND partition = $2",
    )
    .bind(kind)
    .bind(partition as i32)
    .bind(applied as i64)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Applies `frames` (in stream order) and whatever `outbox` already holds for them; returns the
/// events to publish after the commit. `last_seq` is the highest stream sequence of the batch,
/// including frames refused before they reached the handler.
pub async fn apply<H: BatchHandler>(
    pool: &PgPool,
    handler: &H,
    kind: &str,
    partition: u32,
    frames: Vec<Frame>,
    last_seq: u64,
    mut outbox: Outbox,
) -> Result<Option<Outbox>, FrameError> {
    let mut tx = pool.begin().await?;
    let applied = lock_cursor(&mut tx, kind, partition).await?;
    if last_seq <= applied {
        // Every frame here was applied already (a redelivery after a lost ack, or a stale owner).
        tx.rollback().await?;
        return Ok(None);
    }
    let fresh: Vec<Frame> = frames
        .into_iter()
        .filter(|frame| frame.inbound.stream_seq > applied)
        .collect();
    if !fresh.is_empty() {
        handler.apply(&mut tx, fresh, &mut outbox).await?;
    }
    advance_cursor(&mut tx, kind, partition, last_seq).await?;
    tx.commit().await?;
    Ok(Some(outbox))
}

/// Counts the frame at `seq` as applied without applying it (refused for its content, or
/// dead-lettered). False when it was applied already.
pub async fn skip(
    pool: &PgPool,
    kind: &str,
    partition: u32,
    seq: u64,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if lock_cursor(&mut tx, kind, partition).await? >= seq {
        tx.rollback().await?;
        return Ok(false);
    }
    advance_cursor(&mut tx, kind, partition, seq).await?;
    tx.commit().await?;
    Ok(true)
}

/// Whether Postgres answers.
pub async fn database_answers(pool: &PgPool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}
