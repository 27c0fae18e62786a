//! One batch of one partition, in one transaction: lock the partition's cursor, skip what it says
//! is applied, let the handler apply the rest, advance the cursor, commit. The cursor row is the
//! fence against redeliveries and stale owners: whichever owner commits first moves it, and the
//! other's copies of those frames are skipped.

use super::{BatchHandler, Frame, FrameError};
use crate::outbox::{Delivery, Outbox};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;

/// How a failed batch failed.
#[derive(Debug)]
pub enum Failure {
    /// The database cannot take writes now (unreachable, read-only, full, out of memory, timing
    /// out, no connection to spare): stop pulling until a probe says it can. Nothing is counted
    /// against the frames.
    Unavailable(Pause),
    /// `INBOUND` is not the stream the partition's cursor counts in (it was made again): start
    /// the pull over, which adopts the new stream.
    StreamChanged,
    /// A frame's text (or another value) is one Postgres will never store: refuse it.
    Content(String),
    /// Anything else (a constraint, a deadlock, a bug): retry with backoff, then dead-letter.
    Failed(String),
}

/// Why the database is taken to be unavailable: `cause` labels the pause metric.
#[derive(Debug)]
pub struct Pause {
    pub cause: &'static str,
    pub detail: String,
}

/// The batch ran against a cursor of another `INBOUND` than the one it was pulled from.
#[derive(Debug, thiserror::Error)]
#[error("INBOUND was made again: the partition's cursor counts in another stream")]
pub struct StreamChanged;

impl Failure {
    pub fn of(error: &FrameError) -> Failure {
        match error {
            FrameError::Database(error) => classify(error),
            FrameError::Retry(error) if error.is::<StreamChanged>() => Failure::StreamChanged,
            FrameError::Retry(error) => Failure::Failed(format!("{error:#}")),
            FrameError::Refused { error, .. } => Failure::Content(error.clone()),
        }
    }
}

fn unavailable(cause: &'static str, error: &sqlx::Error) -> Failure {
    Failure::Unavailable(Pause {
        cause,
        detail: error.to_string(),
    })
}

/// Tells a failure of the infrastructure (pause, never dead-letter) from one of the frame.
fn classify(error: &sqlx::Error) -> Failure {
    match error {
        sqlx::Error::PoolTimedOut => unavailable("pool_exhausted", error),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => unavailable("connection", error),
        sqlx::Error::Database(database) => match database.code().as_deref().unwrap_or("") {
            // connection exceptions; idle-in-transaction or idle session timeouts
            code if code.starts_with("08") || code == "25P03" || code == "57P05" => {
                unavailable("connection", error)
            }
            // shutting down, crash recovery, cannot connect now, database dropped
            code if code.starts_with("57P") => unavailable("shutting_down", error),
            // a read-only transaction: a standby, or a primary made read-only after a failover
            "25006" => unavailable("read_only", error),
            // statement timeout or cancel; lock timeout
            "57014" | "55P03" => unavailable("timeout", error),
            // disk full, out of memory, too many connections, a configuration limit
            "53100" => unavailable("disk_full", error),
            "53200" => unavailable("out_of_memory", error),
            "53300" | "53400" => unavailable("too_many_connections", error),
            // system errors: I/O on the server
            code if code.starts_with("58") => unavailable("server_io", error),
            // data exceptions: a value Postgres refuses (U+0000 in text, out-of-range numbers)
            code if code.starts_with("22") => Failure::Content(error.to_string()),
            _ => Failure::Failed(error.to_string()),
        },
        _ => Failure::Failed(error.to_string()),
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

/// Locks the partition's cursor; its applied sequence, or `StreamChanged` when it counts in
/// another stream than `epoch`.
async fn lock_cursor(
    tx: &mut PgConnection,
    kind: &str,
    partition: u32,
    epoch: i64,
) -> Result<u64, FrameError> {
    let (applied, stored_epoch): (i64, i64) = sqlx::query_as(
        "SELECT applied_seq, stream_epoch FROM partition_cursors
         WHERE kind = $1 AND partition = $2 FOR UPDATE",
    )
    .bind(kind)
    .bind(partition as i32)
    .fetch_one(&mut *tx)
    .await?;
    if stored_epoch != epoch {
        return Err(FrameError::Retry(StreamChanged.into()));
    }
    Ok(applied.max(0) as u64)
}

/// Makes the partition's cursor count in the `INBOUND` stream created at `epoch` (unix
/// nanoseconds). A cursor of an older stream is reset to the start (the new stream's sequences
/// start at 1 again) and forgets its stored events (they were for frames of the old stream); one
/// of no known stream (made before streams were told apart) is taken to be of this one, as it
/// was. A newer epoch already stored is left alone: this instance read the stream before it was
/// made again, and its batches will fail the fence. True when the cursor was reset.
pub async fn adopt_stream(
    pool: &PgPool,
    kind: &str,
    partition: u32,
    epoch: i64,
) -> Result<bool, sqlx::Error> {
    let reset: Option<bool> = sqlx::query_scalar(
        "UPDATE partition_cursors c
         SET applied_seq = CASE WHEN old.stream_epoch = 0 THEN c.applied_seq ELSE 0 END,
             last_from_seq = CASE WHEN old.stream_epoch = 0 THEN c.last_from_seq ELSE 0 END,
             last_events = CASE WHEN old.stream_epoch = 0 THEN c.last_events ELSE '[]' END,
             stream_epoch = $3, updated_at = now()
         FROM (SELECT kind, partition, stream_epoch FROM partition_cursors
               WHERE kind = $1 AND partition = $2 FOR UPDATE) old
         WHERE c.kind = old.kind AND c.partition = old.partition AND old.stream_epoch < $3
         RETURNING old.stream_epoch <> 0",
    )
    .bind(kind)
    .bind(partition as i32)
    .bind(epoch)
    .fetch_optional(pool)
    .await?;
    Ok(reset.unwrap_or(false))
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
    /// The `INBOUND` stream the frames were pulled from (its creation time): the cursor must
    /// count in the same one.
    pub stream_epoch: i64,
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
    let mut connection = pool.acquire().await?;
    let result = apply_on(&mut connection, handler, kind, parts).await;
    close_if_unavailable(&mut connection, &result);
    result
}

/// A connection that failed for the infrastructure is not given back to the pool: a session
/// opened while the database was read-only (or on a demoted primary, after a failover) stays
/// read-only when the database is writable again; only a new connection sees the change.
pub fn close_if_unavailable<T>(
    connection: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    result: &Result<T, FrameError>,
) {
    if let Err(FrameError::Database(error)) = result
        && matches!(classify(error), Failure::Unavailable(_))
    {
        connection.close_on_drop();
    }
}

async fn apply_on<H: BatchHandler>(
    connection: &mut PgConnection,
    handler: &H,
    kind: &str,
    parts: Vec<Part>,
) -> Result<Vec<Option<Vec<Delivery>>>, FrameError> {
    use sqlx::Connection;
    let mut tx = connection.begin().await?;
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
            let rows = sqlx::query_as::<_, (i32, i64, i64, i64)>(
                "SELECT partition, applied_seq, last_from_seq, stream_epoch FROM partition_cursors
                 WHERE kind = $1 AND partition = ANY($2) ORDER BY partition FOR UPDATE",
            )
            .bind(kind)
            .bind(&partitions)
            .fetch_all(&mut *tx)
            .await?;
            let epochs: HashMap<i32, i64> = parts
                .iter()
                .map(|part| (part.partition as i32, part.stream_epoch))
                .collect();
            if rows
                .iter()
                .any(|(partition, _, _, epoch)| epochs.get(partition) != Some(epoch))
            {
                tx.rollback().await?;
                return Err(FrameError::Retry(StreamChanged.into()));
            }
            rows.into_iter()
                .map(|(partition, applied, from, _)| (partition, (applied, from)))
                .collect()
        }
    };
    let mut results: Vec<Option<Vec<Delivery>>> = Vec::with_capacity(parts.len());
    let mut slot_of: HashMap<u32, usize> = HashMap::new();
    let mut new_events: Vec<Vec<Delivery>> = Vec::with_capacity(parts.len());
    let mut fresh = Vec::new();
    let mut replaying = Vec::new();
    let (mut advancing, mut advanced_to, mut advanced_from) = (Vec::new(), Vec::new(), Vec::new());
    let mut advanced_epoch = Vec::new();
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
        advanced_epoch.push(part.stream_epoch);
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
                // Answers to one socket (a `resume` page, an error, a re-send) are not kept: a
                // client whose answer is lost asks again, and one user's large answers must never
                // make the partition's row (and every batch that writes it) large.
                let events: Vec<StoredDelivery> = slot_of
                    .get(&(*partition as u32))
                    .and_then(|slot| new_events.get(*slot))
                    .map(|events| {
                        events
                            .iter()
                            .filter(|event| event.conn_id.is_none())
                            .map(StoredDelivery::of)
                            .collect()
                    })
                    .unwrap_or_default();
                serde_json::to_string(&events).unwrap_or_else(|_| String::from("[]"))
            })
            .collect();
        // The fence: each cursor must still be where this batch started from (locked above, or
        // believed by the puller), in the stream the frames came from; a cursor that moved means
        // another owner applied these frames, one of another stream that INBOUND was made again.
        let moved = sqlx::query(
            "UPDATE partition_cursors
             SET applied_seq = v.seq, last_from_seq = v.from_seq, last_events = v.events, updated_at = now()
             FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[])
                  AS v(partition, seq, from_seq, events, epoch)
             WHERE kind = $1 AND partition_cursors.partition = v.partition
               AND partition_cursors.applied_seq = v.from_seq - 1
               AND partition_cursors.stream_epoch = v.epoch",
        )
        .bind(kind)
        .bind(&advancing)
        .bind(&advanced_to)
        .bind(&advanced_from)
        .bind(&stored)
        .bind(&advanced_epoch)
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
    epoch: i64,
) -> Result<bool, FrameError> {
    let mut connection = pool.acquire().await?;
    let result = skip_on(&mut connection, kind, partition, seq, epoch).await;
    close_if_unavailable(&mut connection, &result);
    result
}

async fn skip_on(
    connection: &mut PgConnection,
    kind: &str,
    partition: u32,
    seq: u64,
    epoch: i64,
) -> Result<bool, FrameError> {
    use sqlx::Connection;
    let mut tx = connection.begin().await?;
    if lock_cursor(&mut tx, kind, partition, epoch).await? >= seq {
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

/// Whether the database would take a batch now, asked on a connection of its own: the pool's
/// may all be busy (an exhausted pool is no proof of an outage) or broken. It must answer within
/// `PROBE_TIMEOUT` and take writes (not a standby, not read-only).
pub async fn probe(options: &PgConnectOptions) -> Result<(), Pause> {
    use sqlx::Connection;
    let asked = async {
        let mut connection = PgConnection::connect_with(options).await?;
        let read_only: bool = sqlx::query_scalar(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
        )
        .fetch_one(&mut connection)
        .await?;
        let _ = connection.close().await;
        Ok::<bool, sqlx::Error>(read_only)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Ok(Ok(false)) => Ok(()),
        Ok(Ok(true)) => Err(Pause {
            cause: "read_only",
            detail: String::from("the database takes no writes (read-only or a standby)"),
        }),
        Ok(Err(error)) => match classify(&error) {
            Failure::Unavailable(pause) => Err(pause),
            _ => Err(Pause {
                cause: "connection",
                detail: error.to_string(),
            }),
        },
        Err(_) => Err(Pause {
            cause: "timeout",
            detail: format!("no answer within {PROBE_TIMEOUT:?}"),
        }),
    }
}

const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

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
            stream_epoch: 0,
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

    #[tokio::test]
    async fn a_cursor_of_a_stream_made_again_starts_over_and_one_of_an_older_stream_is_kept() {
        let (pool, url) = scratch_database().await;
        // Cursors from before streams were told apart are taken to be of the current stream.
        apply(&pool, &Recorder, "probe", vec![part(1, 1..=40, None)])
            .await
            .expect("a batch under no known stream");
        assert!(!adopt_stream(&pool, "probe", 1, 100).await.expect("adopt"));
        let cursor = || async {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT applied_seq, stream_epoch FROM partition_cursors
                 WHERE kind = 'probe' AND partition = 1",
            )
            .fetch_one(&pool)
            .await
            .expect("cursor")
        };
        assert_eq!(cursor().await, (40, 100));
        // A batch of frames pulled from another stream than the cursor's is refused.
        let mut stale = part(1, 41..=41, None);
        stale.stream_epoch = 99;
        let refused = apply(&pool, &Recorder, "probe", vec![stale]).await;
        assert!(matches!(
            refused.as_ref().map_err(Failure::of),
            Err(Failure::StreamChanged)
        ));
        // INBOUND made again (created later): its sequence 1 is new, not "already applied".
        assert!(adopt_stream(&pool, "probe", 1, 200).await.expect("adopt"));
        assert_eq!(cursor().await, (0, 200));
        let mut fresh = part(1, 1..=2, None);
        fresh.stream_epoch = 200;
        apply(&pool, &Recorder, "probe", vec![fresh])
            .await
            .expect("the new stream's first frames");
        // An instance that read the old stream before it was made again changes nothing.
        assert!(!adopt_stream(&pool, "probe", 1, 100).await.expect("adopt"));
        assert_eq!(cursor().await, (2, 200));
        let applied_seqs = applied(&pool).await;
        assert_eq!(applied_seqs.len(), 42, "40 of the old stream, 2 of the new");
        pool.close().await;
        let _ = <sqlx::Postgres as sqlx::migrate::MigrateDatabase>::drop_database(&url).await;
    }

    #[tokio::test]
    async fn read_only_databases_and_lock_or_statement_timeouts_are_outages_not_bad_frames() {
        let (pool, url) = scratch_database().await;
        // Each on a connection of its own: a failed statement leaves its session unusable.
        let failure_of = |sql: &'static str| {
            let url = url.clone();
            async move {
                use sqlx::Connection;
                let mut connection = PgConnection::connect(&url).await.expect("connect");
                let error = sqlx::raw_sql(sql)
                    .execute(&mut connection)
                    .await
                    .expect_err("the statement fails");
                Failure::of(&FrameError::Database(error))
            }
        };
        let cause = |failure: Failure| match failure {
            Failure::Unavailable(pause) => pause.cause,
            other => panic!("not an outage: {other:?}"),
        };
        assert_eq!(
            cause(failure_of("BEGIN READ ONLY; INSERT INTO fence_probe VALUES (1); COMMIT").await),
            "read_only"
        );
        assert_eq!(
            cause(failure_of("SET statement_timeout = '10ms'; SELECT pg_sleep(1)").await),
            "timeout"
        );
        let mut holder = pool.begin().await.expect("holder");
        sqlx::query("LOCK TABLE fence_probe IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *holder)
            .await
            .expect("lock");
        assert_eq!(
            cause(
                failure_of("SET lock_timeout = '10ms'; INSERT INTO fence_probe VALUES (1)").await
            ),
            "timeout"
        );
        holder.rollback().await.expect("release");
        assert!(matches!(
            failure_of("INSERT INTO no_such_table VALUES (1)").await,
            Failure::Failed(_)
        ));
        pool.close().await;
        let _ = <sqlx::Postgres as sqlx::migrate::MigrateDatabase>::drop_database(&url).await;
    }

    #[test]
    fn an_unreachable_database_pauses_and_other_failures_retry() {
        let unavailable = FrameError::Database(sqlx::Error::PoolTimedOut);
        assert!(matches!(Failure::of(&unavailable), Failure::Unavailable(_)));
        let changed = FrameError::Retry(StreamChanged.into());
        assert!(matches!(Failure::of(&changed), Failure::StreamChanged));
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
