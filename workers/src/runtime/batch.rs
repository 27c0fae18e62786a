//! One batch of one partition, in one transaction: lock the partition's cursor, skip what it says
//! is applied, let the handler apply the rest, advance the cursor, commit. The cursor row is the
//! fence against redeliveries and stale owners: whichever owner commits first moves it, and the
//! other's copies of those frames are skipped.

use super::{BatchHandler, Frame, FrameError};
use crate::outbox::{Delivery, Outbox};
use serde::{Deserialize, Serialize};
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

/// One partition's share of a transaction: its frames in stream order, the stream sequences they
/// span (frames refused before parsing included), and the events already decided for them (those
/// refusals).
pub struct Part {
    pub partition: u32,
    pub frames: Vec<Frame>,
    pub first_seq: u64,
    pub last_seq: u64,
    pub early: Vec<Delivery>,
}

/// A delivery as `partition_cursors.last_events` keeps it.
#[derive(Serialize, Deserialize)]
struct StoredDelivery {
    user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conn_id: Option<String>,
    #[serde(default)]
    close: bool,
    frame: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notice_subject: Option<String>,
    #[serde(default)]
    trace_id: String,
}

impl StoredDelivery {
    fn of(delivery: &Delivery) -> StoredDelivery {
        StoredDelivery {
            user_id: delivery.user_id.clone(),
            conn_id: delivery.conn_id.clone(),
            close: delivery.close,
            frame: delivery.frame.clone(),
            notice_subject: delivery.notice_subject.clone(),
            trace_id: delivery.trace_id.to_string(),
        }
    }

    fn into_delivery(self, partition: u32) -> Delivery {
        Delivery {
            user_id: self.user_id,
            conn_id: self.conn_id,
            close: self.close,
            frame: self.frame,
            notice_subject: self.notice_subject,
            trace_id: self.trace_id.into(),
            partition,
        }
    }
}

/// Applies the parts (each of a different partition) in one transaction: locks their cursors,
/// skips what each says is applied, lets the handler apply the rest in one call, advances the
/// cursors and stores each part's events with them, commits. Returns, per part, the events to
/// publish once it is acked, or `None` when every frame of it was applied already (a stale owner's
/// copy, or a redelivery whose events went out before).
///
/// A part that brings back frames of its partition's last batch means that batch's acks never
/// reached the server, and so neither did its events (they follow the acks on one connection):
/// the stored events are published again, once.
pub async fn apply<H: BatchHandler>(
    pool: &PgPool,
    handler: &H,
    kind: &str,
    parts: Vec<Part>,
) -> Result<Vec<Option<Vec<Delivery>>>, FrameError> {
    let mut tx = pool.begin().await?;
    let partitions: Vec<i32> = parts.iter().map(|part| part.partition as i32).collect();
    let cursors: HashMap<i32, (i64, i64)> = sqlx::query_as::<_, (i32, i64, i64)>(
        "SELECT partition, applied_seq, last_from_seq FROM partition_cursors
         WHERE kind = $1 AND partition = ANY($2) ORDER BY partition FOR UPDATE",
    )
    .bind(kind)
    .bind(&partitions)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(partition, applied, from)| (partition, (applied, from)))
    .collect();
    let mut results: Vec<Option<Vec<Delivery>>> = Vec::with_capacity(parts.len());
    let mut slot_of: HashMap<u32, usize> = HashMap::new();
    let mut new_events: Vec<Vec<Delivery>> = Vec::with_capacity(parts.len());
    let mut fresh = Vec::new();
    let mut replaying = Vec::new();
    let (mut advancing, mut advanced_to, mut advanced_from) = (Vec::new(), Vec::new(), Vec::new());
    for part in parts {
        let (applied, last_from) = cursors
            .get(&(part.partition as i32))
            .copied()
            .unwrap_or((0, 0));
        let (applied, last_from) = (applied.max(0) as u64, last_from.max(0) as u64);
        let replays = last_from > 0 && part.first_seq <= applied && part.last_seq >= last_from;
        if replays {
            replaying.push(part.partition as i32);
        }
        let advances = part.last_seq > applied;
        slot_of.insert(part.partition, results.len());
        results.push((replays || advances).then(Vec::new));
        new_events.push(if advances { part.early } else { Vec::new() });
        if !advances {
            continue;
        }
        fresh.extend(
            part.frames
                .into_iter()
                .filter(|frame| frame.inbound.stream_seq > applied),
        );
        advancing.push(part.partition as i32);
        advanced_to.push(part.last_seq as i64);
        advanced_from.push(applied as i64 + 1);
    }
    if advancing.is_empty() && replaying.is_empty() {
        tx.rollback().await?;
        return Ok(results);
    }
    if !replaying.is_empty() {
        let stored: Vec<(i32, sqlx::types::Json<Vec<StoredDelivery>>)> = sqlx::query_as(
            "UPDATE partition_cursors c SET last_events = '[]'
             FROM (SELECT partition, last_events FROM partition_cursors
                   WHERE kind = $1 AND partition = ANY($2)) old
             WHERE c.kind = $1 AND c.partition = old.partition
             RETURNING old.partition, old.last_events",
        )
        .bind(kind)
        .bind(&replaying)
        .fetch_all(&mut *tx)
        .await?;
        for (partition, events) in stored {
            let partition = partition as u32;
            tracing::info!(
                kind,
                partition,
                events = events.0.len(),
                "a committed batch came back unacked: publishing its events again"
            );
            if let Some(Some(slot)) = slot_of
                .get(&partition)
                .and_then(|slot| results.get_mut(*slot))
            {
                slot.extend(
                    events
                        .0
                        .into_iter()
                        .map(|event| event.into_delivery(partition)),
                );
            }
        }
    }
    let mut outbox = Outbox::default();
    if !fresh.is_empty() {
        handler.apply(&mut tx, fresh, &mut outbox).await?;
    }
    for delivery in outbox.into_deliveries() {
        if let Some(events) = slot_of
            .get(&delivery.partition)
            .and_then(|slot| new_events.get_mut(*slot))
        {
            events.push(delivery);
        }
    }
    if !advancing.is_empty() {
        let stored: Vec<sqlx::types::Json<Vec<StoredDelivery>>> = advancing
            .iter()
            .map(|partition| {
                let events = slot_of
                    .get(&(*partition as u32))
                    .and_then(|slot| new_events.get(*slot))
                    .map(|events| events.iter().map(StoredDelivery::of).collect())
                    .unwrap_or_default();
                sqlx::types::Json(events)
            })
            .collect();
        sqlx::query(
            "UPDATE partition_cursors
             SET applied_seq = v.seq, last_from_seq = v.from_seq, last_events = v.events, updated_at = now()
             FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::jsonb[]) AS v(partition, seq, from_seq, events)
             WHERE kind = $1 AND partition_cursors.partition = v.partition",
        )
        .bind(kind)
        .bind(&advancing)
        .bind(&advanced_to)
        .bind(&advanced_from)
        .bind(&stored)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    for (slot, events) in new_events.into_iter().enumerate() {
        if let Some(Some(published)) = results.get_mut(slot) {
            published.extend(events);
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
    // A frame given up on has no events to publish again.
    sqlx::query(
        "UPDATE partition_cursors
         SET applied_seq = $3, last_from_seq = $3, last_events = '[]', updated_at = now()
         WHERE kind = $1 AND partition = $2",
    )
    .bind(kind)
    .bind(partition as i32)
    .bind(seq as i64)
    .execute(&mut *tx)
    .await?;
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
