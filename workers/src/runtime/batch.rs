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
    /// The partition's applied sequence as its puller last committed it, when it believes nobody
    /// else moved it since. Then the cursor is not read and locked up front (one round trip
    /// less); the final update checks the belief instead, and a wrong one rolls the batch back.
    pub expected_applied: Option<u64>,
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
    // When every part follows on from what its puller committed last, no frame of it can be a
    // redelivery: the cursors need no reading (the final update checks them).
    let believed: Option<HashMap<i32, (i64, i64)>> = parts
        .iter()
        .map(|part| {
            part.expected_applied
                .filter(|expected| part.first_seq > *expected)
                .map(|expected| (part.partition as i32, (expected as i64, 0)))
        })
        .collect();
    let cursors = match believed {
        Some(cursors) => cursors,
        None => {
            let partitions: Vec<i32> = parts.iter().map(|part| part.partition as i32).collect();
            sqlx::query_as::<_, (i32, i64, i64)>(
                "SELECT partition, applied_seq, last_from_seq FROM partition_cursors
                 WHERE kind = $1 AND partition = ANY($2) ORDER BY partition FOR UPDATE",
            )
            .bind(kind)
            .bind(&partitions)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(partition, applied, from)| (partition, (applied, from)))
            .collect()
        }
    };
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
        let stored: Vec<(i32, String)> = sqlx::query_as(
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
            let events: Vec<StoredDelivery> = serde_json::from_str(&events).unwrap_or_else(|error| {
                tracing::error!(%error, kind, partition, "stored events do not parse; they are not published again");
                Vec::new()
            });
            tracing::info!(
                kind,
                partition,
                events = events.len(),
                "a committed batch came back unacked: publishing its events again"
            );
            if let Some(Some(slot)) = slot_of
                .get(&partition)
                .and_then(|slot| results.get_mut(*slot))
            {
                slot.extend(
                    events
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
        let stored: Vec<String> = advancing
            .iter()
            .map(|partition| {
                let events: Vec<StoredDelivery> = slot_of
                    .get(&(*partition as u32))
                    .and_then(|slot| new_events.get(*slot))
                    .map(|events| events.iter().map(StoredDelivery::of).collect())
                    .unwrap_or_default();
                serde_json::to_string(&events).unwrap_or_else(|_| String::from("[]"))
            })
            .collect();
        // The fence: each cursor must still be where this batch started from (locked above, or
        // believed by the puller); a cursor that moved means another owner applied these frames.
        let moved = sqlx::query(
            "UPDATE partition_cursors
             SET applied_seq = v.seq, last_from_seq = v.from_seq, last_events = v.events, updated_at = now()
             FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::text[]) AS v(partition, seq, from_seq, events)
             WHERE kind = $1 AND partition_cursors.partition = v.partition
               AND partition_cursors.applied_seq = v.from_seq - 1",
        )
        .bind(kind)
        .bind(&advancing)
        .bind(&advanced_to)
        .bind(&advanced_from)
        .bind(&stored)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != advancing.len() as u64 {
            tx.rollback().await?;
            return Err(FrameError::Retry(anyhow::anyhow!(
                "a partition cursor moved under this batch (another owner applied its frames)"
            )));
        }
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
    use crate::runtime::{Inbound, Sender};
    use shared::auth::Role;
    use shared::frames::ClientFrame;
    use shared::subjects::{Address, Topic};

    /// Records which stream sequences it applied, in the batch's transaction.
    struct Recorder;

    impl BatchHandler for Recorder {
        async fn apply(
            &self,
            tx: &mut PgConnection,
            frames: Vec<Frame>,
            _outbox: &mut Outbox,
        ) -> Result<(), FrameError> {
            for frame in frames {
                sqlx::query("INSERT INTO fence_probe (seq) VALUES ($1)")
                    .bind(frame.inbound.stream_seq as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        }
    }

    fn part(partition: u32, seqs: std::ops::RangeInclusive<u64>, expected: Option<u64>) -> Part {
        let session_id = uuid::Uuid::new_v4();
        let frames: Vec<Frame> = seqs
            .clone()
            .map(|stream_seq| Frame {
                inbound: Inbound {
                    address: Address::Session {
                        session_id,
                        topic: Topic::Chat,
                    },
                    sender: Sender {
                        user_id: String::from("u"),
                        role: Role::Seeker,
                        conn_id: String::from("c"),
                    },
                    trace_id: std::sync::Arc::from(""),
                    request_type: None,
                    stream_seq,
                    partition,
                },
                frame: ClientFrame::StartChat { session_id },
            })
            .collect();
        Part {
            partition,
            frames,
            first_seq: *seqs.start(),
            last_seq: *seqs.end(),
            early: Vec::new(),
            expected_applied: expected,
        }
    }

    /// A database of its own on the machine's Postgres (`DATABASE_ADMIN_URL`, as the system
    /// tests use), with the migrations applied.
    async fn scratch_database() -> (PgPool, String) {
        let admin = std::env::var("DATABASE_ADMIN_URL")
            .unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/postgres"));
        let name = format!("workers_fence_{}", uuid::Uuid::new_v4().simple());
        let (server, _) = admin.rsplit_once('/').expect("a database part");
        let url = format!("{server}/{name}");
        shared::db::migrate(&url).await.expect("migrations");
        let pool = PgPool::connect(&url).await.expect("connect");
        sqlx::query("CREATE TABLE fence_probe (seq BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .expect("probe table");
        create_cursors(&pool, "probe").await.expect("cursors");
        (pool, url)
    }

    async fn applied(pool: &PgPool) -> Vec<i64> {
        sqlx::query_scalar("SELECT seq FROM fence_probe ORDER BY seq")
            .fetch_all(pool)
            .await
            .expect("probe rows")
    }

    #[tokio::test]
    async fn a_stale_owners_batch_rolls_back_and_nothing_is_applied_twice() {
        let (pool, url) = scratch_database().await;
        // The owner applies 1..=3 (cursor read), then 4..=5 on its belief that it stands at 3.
        apply(&pool, &Recorder, "probe", vec![part(2, 1..=3, None)])
            .await
            .expect("first batch");
        apply(&pool, &Recorder, "probe", vec![part(2, 4..=5, Some(3))])
            .await
            .expect("batch on a right belief");
        // A stale owner still believes the cursor stands at 3: its copy of 4..=6 must not land.
        let stale = apply(&pool, &Recorder, "probe", vec![part(2, 4..=6, Some(3))]).await;
        assert!(
            matches!(stale, Err(FrameError::Retry(_))),
            "a stale belief is refused"
        );
        assert_eq!(applied(&pool).await, vec![1, 2, 3, 4, 5]);
        // Retried with the cursor read (as the runtime does), only what is new is applied.
        apply(&pool, &Recorder, "probe", vec![part(2, 4..=6, None)])
            .await
            .expect("retry alone");
        assert_eq!(applied(&pool).await, vec![1, 2, 3, 4, 5, 6]);
        // A belief that another partition's cursor disproves rolls back the shared transaction.
        let shared = apply(
            &pool,
            &Recorder,
            "probe",
            vec![part(2, 7..=7, Some(6)), part(5, 3..=3, Some(2))],
        )
        .await;
        assert!(shared.is_err());
        assert_eq!(applied(&pool).await, vec![1, 2, 3, 4, 5, 6]);
        pool.close().await;
        let _ = <sqlx::Postgres as sqlx::migrate::MigrateDatabase>::drop_database(&url).await;
    }

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
