//! `message.unread` (contract section 13), derived from committed messages rather than written
//! by the chat path: the chat worker's transaction stays as it was (one more entry in the small
//! partial index `chat_messages_undelivered_by_age`, migration 0014), and once a second one notify
//! instance reads the slice of undelivered messages that came due since its last pass.
//!
//! A pass, in one transaction:
//! 1. takes the `webhook_sweeps` row (`FOR UPDATE SKIP LOCKED`: one instance sweeps, the others
//!    skip this second), which says how far the previous pass read;
//! 2. lists the (session, recipient) pairs with a message undelivered to them and created in
//!    `(swept_to - LOOKBACK, now - PUSH_AFTER_SECS]`, plus those held back by the coalescing window
//!    whose window has ended (`webhook_unread_marks.held`);
//! 3. for each, reads the newest message still undelivered to the recipient and the session's
//!    unread count: none (delivered or read meanwhile) or nothing newer than what was announced
//!    means nothing; a `message.unread` sent less than `PUSH_COALESCE_SECS` ago holds it back
//!    (`held`); a recipient online means nothing either (the mark still moves, so it is not
//!    announced later); otherwise the event is queued with its deliveries;
//! 4. moves `swept_to` and commits. A crash anywhere before the commit leaves everything as it
//!    was for the next pass: nothing is lost, nothing is announced twice.
//!
//! `LOOKBACK` re-reads a few seconds before `swept_to`: `created_at` is the chat worker's clock
//! at the batch's start, and a message that committed later than that (a slow batch, a skewed
//! clock) is still found; the marks make re-reading harmless.

use super::presence;
use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{FromRow, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// How far before the last pass's end each pass reads again.
const LOOKBACK: Duration = Duration::from_secs(15);
/// At most this much of the messages' history per pass, when catching up after a pause.
const MAX_SLICE: Duration = Duration::from_secs(300);
/// Characters of text in `preview` (with `WEBHOOK_INCLUDE_PREVIEW=1`).
const PREVIEW_CHARS: usize = 100;

/// `PUSH_AFTER_SECS`, `PUSH_COALESCE_SECS`, `WEBHOOK_INCLUDE_PREVIEW`.
#[derive(Clone, Debug)]
pub struct UnreadRule {
    pub after: Duration,
    pub coalesce: Duration,
    pub include_preview: bool,
}

/// Why a pass stopped: the database or the presence bucket.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Presence(#[from] presence::PresenceError),
}

/// One (session, recipient) as it stands now.
#[derive(FromRow)]
struct Candidate {
    session_id: Uuid,
    role: String,
    work_id: i64,
    user_id: String,
    /// The newest message still undelivered to the recipient (None: all delivered meanwhile).
    seq: Option<i64>,
    kind: Option<String>,
    message_text: Option<String>,
    unread_count: i64,
    announced_seq: Option<i64>,
    last_sent_at: Option<DateTime<Utc>>,
}

/// What a pass did, for the logs and the tests' patience.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub announced: usize,
    pub held: usize,
    pub skipped_online: usize,
}

/// One pass (see the module's documentation); nothing when another instance holds the sweep.
pub async fn sweep(
    pool: &PgPool,
    store: &kv::Store,
    urls: &[String],
    rule: &UnreadRule,
) -> Result<Swept, SweepError> {
    let mut tx = pool.begin().await?;
    let cursor: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT swept_to, now() FROM webhook_sweeps WHERE name = 'message.unread'
         FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((swept_to, now)) = cursor else {
        return Ok(Swept::default());
    };
    let due_until = (now - to_chrono(rule.after)).min(swept_to + to_chrono(MAX_SLICE));
    let from = swept_to - to_chrono(LOOKBACK);
    let pairs: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT due.session_id, due.role FROM (
             SELECT session_id, seq,
                    CASE sender_type WHEN 'seeker' THEN 'provider' ELSE 'seeker' END AS role
             FROM chat_messages
             WHERE delivery_status = 'sent' AND sender_type IN ('seeker', 'provider')
               AND created_at > $1 AND created_at <= $2
             UNION ALL
             SELECT m.session_id, m.seq, r.role
             FROM chat_messages m
             CROSS JOIN LATERAL (VALUES ('seeker', m.seeker_delivered_at),
                                        ('provider', m.provider_delivered_at)) AS r (role, delivered_at)
             WHERE m.sender_type = 'mediator'
               AND (m.seeker_delivered_at IS NULL OR m.provider_delivered_at IS NULL)
               AND r.delivered_at IS NULL AND m.created_at > $1 AND m.created_at <= $2) due
         -- A message a previous pass covered (announced, or its recipient was online) is not
         -- looked at again while the look-back still reads it: each due message costs one pass.
         WHERE NOT EXISTS (
             SELECT 1 FROM webhook_unread_marks k
             WHERE k.session_id = due.session_id AND k.role = due.role
               AND k.announced_seq >= due.seq)
         GROUP BY due.session_id, due.role
         UNION
         SELECT session_id, role FROM webhook_unread_marks
         WHERE held AND last_sent_at <= $3 - make_interval(secs => $4)",
    )
    .bind(from)
    .bind(due_until)
    .bind(now)
    .bind(rule.coalesce.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let mut swept = Swept::default();
    if !pairs.is_empty() {
        let candidates = read_candidates(&mut tx, &pairs).await?;
        swept = decide(&mut tx, store, urls, rule, now, candidates).await?;
    }
    sqlx::query("UPDATE webhook_sweeps SET swept_to = $1 WHERE name = 'message.unread'")
        .bind(due_until.max(swept_to))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(swept)
}

fn to_chrono(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

async fn read_candidates(
    tx: &mut sqlx::PgConnection,
    pairs: &[(Uuid, String)],
) -> Result<Vec<Candidate>, sqlx::Error> {
    let session_ids: Vec<Uuid> = pairs.iter().map(|(id, _)| *id).collect();
    let roles: Vec<&str> = pairs.iter().map(|(_, role)| role.as_str()).collect();
    // The newest undelivered message walks the session's (session_id, seq) index backwards; the
    // unread count is the inbox's (contract section 9) for that recipient.
    sqlx::query_as::<_, Candidate>(
        "SELECT c.session_id, c.role, s.work_id,
                CASE c.role WHEN 'seeker' THEN s.seeker_id ELSE s.provider_id END AS user_id,
                lm.seq, lm.kind, lm.message_text, u.unread_count,
                k.announced_seq, k.last_sent_at
         FROM unnest($1::uuid[], $2::text[]) AS c (session_id, role)
         JOIN work_sessions s ON s.session_id = c.session_id
         LEFT JOIN webhook_unread_marks k ON k.session_id = c.session_id AND k.role = c.role
         LEFT JOIN LATERAL (
             SELECT m.seq, m.kind, m.message_text FROM chat_messages m
             WHERE m.session_id = c.session_id
               AND ((m.sender_type IN ('seeker', 'provider') AND m.sender_type <> c.role
                     AND m.delivery_status = 'sent')
                    OR (m.sender_type = 'mediator'
                        AND CASE c.role WHEN 'seeker' THEN m.seeker_delivered_at
                                        ELSE m.provider_delivered_at END IS NULL))
             ORDER BY m.seq DESC LIMIT 1) lm ON true
         CROSS JOIN LATERAL (
             SELECT count(*) AS unread_count FROM chat_messages m
             WHERE m.session_id = c.session_id AND m.delivery_status <> 'read'
               AND m.sender_type NOT IN (c.role, 'system')
               AND (m.expires_at IS NULL OR m.expires_at > now())) u",
    )
    .bind(&session_ids)
    .bind(&roles)
    .fetch_all(&mut *tx)
    .await
}

/// A mark to write: the newest seq covered (kept when lower), when sent (kept when None), held.
struct Mark {
    session_id: Uuid,
    role: String,
    announced_seq: i64,
    sent_at: Option<DateTime<Utc>>,
    held: bool,
}

async fn decide(
    tx: &mut sqlx::PgConnection,
    store: &kv::Store,
    urls: &[String],
    rule: &UnreadRule,
    now: DateTime<Utc>,
    candidates: Vec<Candidate>,
) -> Result<Swept, SweepError> {
    let mut swept = Swept::default();
    let mut marks = Vec::new();
    let mut to_announce = Vec::new();
    for candidate in candidates {
        let announced = candidate.announced_seq.unwrap_or(0);
        let Some(seq) = candidate.seq.filter(|seq| *seq > announced) else {
            // Delivered or read meanwhile, or already announced: nothing, and not held any more.
            marks.push(Mark {
                session_id: candidate.session_id,
                role: candidate.role.clone(),
                announced_seq: announced,
                sent_at: None,
                held: false,
            });
            continue;
        };
        let in_window = candidate
            .last_sent_at
            .is_some_and(|sent| sent > now - to_chrono(rule.coalesce));
        if in_window {
            swept.held += 1;
            marks.push(Mark {
                session_id: candidate.session_id,
                role: candidate.role.clone(),
                announced_seq: announced,
                sent_at: None,
                held: true,
            });
            continue;
        }
        to_announce.push((candidate, seq));
    }
    let online = presence::online_among(
        store,
        to_announce
            .iter()
            .map(|(candidate, _)| candidate.user_id.clone())
            .collect::<std::collections::HashSet<_>>(),
    )
    .await?;
    let mut events = Vec::new();
    for (candidate, seq) in to_announce {
        let is_online = online.contains(&candidate.user_id);
        marks.push(Mark {
            session_id: candidate.session_id,
            role: candidate.role.clone(),
            announced_seq: seq,
            sent_at: (!is_online).then_some(now),
            held: false,
        });
        if is_online {
            swept.skipped_online += 1;
            continue;
        }
        swept.announced += 1;
        let mut data = json!({
            "user_id": candidate.user_id,
            "role": candidate.role,
            "session_id": candidate.session_id,
            "work_id": candidate.work_id,
            "unread_count": candidate.unread_count,
            "seq": seq,
            "kind": candidate.kind,
        });
        if rule.include_preview
            && let Some(text) = &candidate.message_text
        {
            data["preview"] = json!(text.chars().take(PREVIEW_CHARS).collect::<String>());
        }
        events.push((candidate.user_id, candidate.role, data));
    }
    write_marks(tx, &marks).await?;
    write_events(tx, &events, urls).await?;
    for _ in 0..swept.announced {
        metrics::counter!("webhook_events_total", "type" => crate::webhook_events::MESSAGE_UNREAD, "outcome" => "queued").increment(1);
    }
    metrics::counter!("webhook_events_total", "type" => crate::webhook_events::MESSAGE_UNREAD, "outcome" => "skipped_online").increment(swept.skipped_online as u64);
    Ok(swept)
}

async fn write_marks(tx: &mut sqlx::PgConnection, marks: &[Mark]) -> Result<(), sqlx::Error> {
    if marks.is_empty() {
        return Ok(());
    }
    let session_ids: Vec<Uuid> = marks.iter().map(|mark| mark.session_id).collect();
    let roles: Vec<&str> = marks.iter().map(|mark| mark.role.as_str()).collect();
    let seqs: Vec<i64> = marks.iter().map(|mark| mark.announced_seq).collect();
    let sent: Vec<Option<DateTime<Utc>>> = marks.iter().map(|mark| mark.sent_at).collect();
    let held: Vec<bool> = marks.iter().map(|mark| mark.held).collect();
    sqlx::query(
        "INSERT INTO webhook_unread_marks AS k (session_id, role, announced_seq, last_sent_at, held)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[], $5::bool[])
         ON CONFLICT (session_id, role) DO UPDATE
         SET announced_seq = GREATEST(k.announced_seq, EXCLUDED.announced_seq),
             last_sent_at = COALESCE(EXCLUDED.last_sent_at, k.last_sent_at),
             held = EXCLUDED.held",
    )
    .bind(&session_ids)
    .bind(&roles)
    .bind(&seqs)
    .bind(&sent)
    .bind(&held)
    .execute(tx)
    .await?;
    Ok(())
}

/// Stores the events already checked (queued at once) and their deliveries.
async fn write_events(
    tx: &mut sqlx::PgConnection,
    events: &[(String, String, serde_json::Value)],
    urls: &[String],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let user_ids: Vec<&str> = events
        .iter()
        .map(|(user_id, _, _)| user_id.as_str())
        .collect();
    let roles: Vec<&str> = events.iter().map(|(_, role, _)| role.as_str()).collect();
    let data: Vec<&serde_json::Value> = events.iter().map(|(_, _, data)| data).collect();
    sqlx::query(
        "WITH events AS (
             INSERT INTO webhook_events (event_type, user_id, role, data, state)
             SELECT 'message.unread', user_id, role, data, 'queued'
             FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS e (user_id, role, data)
             RETURNING webhook_id)
         INSERT INTO webhook_deliveries (webhook_id, url)
         SELECT events.webhook_id, url FROM events CROSS JOIN unnest($4::text[]) AS url",
    )
    .bind(&user_ids)
    .bind(&roles)
    .bind(&data)
    .bind(urls)
    .execute(tx)
    .await?;
    Ok(())
}
