//! One batch of one partition, in one transaction: lock the partition's cursor, skip what it says
//! is applied, let the handler apply the rest, advance the cursor, commit. The cursor row is the
//! fence against redeliveries and stale owners: whichever owner commits first moves it, and the
//! other's copies of those frames are skipped.

use super::{BatchHandler, Frame, FrameError};
use crate::outbox::{Delivery, Outbox};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;

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

/// One partition's share of a transaction: its frames in stream order, the highest stream
/// sequence they cover (frames refused before parsing included), and the events already decided
/// for them (those refusals).
pub struct Part {
    pub partition: u32,
    pub frames: Vec<Frame>,
    pub last_seq: u64,
    pub early: Vec<Delivery>,
}

/// Applies the parts (each of a different partition) in one transaction: locks their cursors,
/// skips what each says is applied, lets the handler apply the rest in one call, advances the
/// cursors, commits. Returns, per part, the events to publish once it is acked, or `None` when
/// every frame of it was applied already (a redelivery, or a stale owner's copy).
pub async fn apply<H: BatchHandler>(
    pool: &PgPool,
    handler: &H,
    kind: &str,
    parts: Vec<Part>,
) -> Result<Vec<Option<Vec<Delivery>>>, FrameError> {
    let mut tx = pool.begin().await?;
    let partitions: Vec<i32> = parts.iter().map(|part| part.partition as i32).collect();
    let cursors: HashMap<i32, i64> = sqlx::query_as::<_, (i32, i64)>(
        "SELECT partition, applied_seq FROM partition_cursors
         WHERE kind = $1 AND partition = ANY($2) ORDER BY partition FOR UPDATE",
    )
    .bind(kind)
    .bind(&partitions)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut results: Vec<Option<Vec<Delivery>>> = Vec::with_capacity(parts.len());
    let mut slot_of: HashMap<u32, usize> = HashMap::new();
    let mut fresh = Vec::new();
    let (mut advancing, mut advanced_to) = (Vec::new(), Vec::new());
    for part in parts {
        let applied = cursors
            .get(&(part.partition as i32))
            .copied()
            .unwrap_or(0)
            .max(0) as u64;
        if part.last_seq <= applied {
            results.push(None);
            continue;
        }
        slot_of.insert(part.partition, results.len());
        results.push(Some(part.early));
        fresh.extend(
            part.frames
                .into_iter()
                .filter(|frame| frame.inbound.stream_seq > applied),
        );
        advancing.push(part.partition as i32);
        advanced_to.push(part.last_seq as i64);
    }
    if advancing.is_empty() {
        tx.rollback().await?;
        return Ok(results);
    }
    let mut outbox = Outbox::default();
    if !fresh.is_empty() {
        handler.apply(&mut tx, fresh, &mut outbox).await?;
    }
    sqlx::query(
        "UPDATE partition_cursors SET applied_seq = v.seq, updated_at = now()
         FROM unnest($2::int[], $3::bigint[]) AS v(partition, seq)
         WHERE kind = $1 AND partition_cursors.partition = v.partition",
    )
    .bind(kind)
    .bind(&advancing)
    .bind(&advanced_to)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    for delivery in outbox.into_deliveries() {
        if let Some(Some(events)) = slot_of
            .get(&delivery.partition)
            .and_then(|slot| results.get_mut(*slot))
        {
            events.push(delivery);
        }
    }
    Ok(results)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_pauses_and_other_failures_retry() {
        let unavailable = FrameError::Database(sqlx::Error::PoolTimedOut);
        assert!(matches!(Failure::of(&unavailable), Failure::Unavailable(_)));
        let io = FrameError::Database(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(Failure::of(&io), Failure::Unavailable(_)));
        let other = FrameError::Retry(anyhow::anyhow!("a bug"));
        assert!(matches!(Failure::of(&other), Failure::Failed(_)));
        let refused = FrameError::refused("bad", None);
        assert!(matches!(Failure::of(&refused), Failure::Content(_)));
    }
}
