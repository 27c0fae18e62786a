//! `bench inbox`: the inbox (`GET /api/conversations`) of a seeker with 2,000 ended sessions (each
//! with chat that has not expired, four messages, one unread) and one live one, through the real
//! gateway and chat worker: latency p50/p99 of the first page and of a page deep in the list, and
//! the query plan of the first page.

use hdrhistogram::Histogram;
use shared::auth::Role;
use std::time::Instant;
use system_tests::{StackOptions, TestStack};

const ENDED_SESSIONS: i64 = 2_000;
const CALLS: usize = 300;

pub async fn run() -> anyhow::Result<()> {
    // 300 calls of one user measure the inbox, not the per-user REST limit.
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .env("GATEWAY_REST_RATE_PER_SEC", "0"),
    )
    .await;
    // The history is written straight into Postgres: 2,000 sessions through the sockets would
    // measure the lifecycle, not the inbox.
    sqlx::query(
        "INSERT INTO users (user_id, role) VALUES ('inbox-seeker', 'seeker'), ('inbox-provider', 'provider')
         ON CONFLICT DO NOTHING",
    )
    .execute(&stack.pool)
    .await?;
    sqlx::query(
        "WITH orders AS (
             INSERT INTO work_orders (seeker_id, provider_id, service_type, latitude, longitude, status)
             SELECT 'inbox-seeker', 'inbox-provider', 'Plumbing', 28.6, 77.2, 'completed'
             FROM generate_series(1, $1) RETURNING work_id)
         INSERT INTO work_sessions (session_id, work_id, seeker_id, provider_id, connection_state,
                                    completed_by, completed_at, last_message_seq, last_activity_at,
                                    chat_expires_at)
         SELECT gen_random_uuid(), work_id, 'inbox-seeker', 'inbox-provider', 'completed', 'seeker',
                now() - make_interval(mins => work_id::int), 4,
                now() - make_interval(mins => work_id::int), now() + interval '1 day'
         FROM orders",
    )
    .bind(ENDED_SESSIONS)
    .execute(&stack.pool)
    .await?;
    sqlx::query(
        "INSERT INTO chat_messages (message_id, session_id, seq, sender_id, sender_type, message_text,
                                    delivery_status, kind, created_at, expires_at)
         SELECT gen_random_uuid(), s.session_id, n,
                CASE WHEN n % 2 = 0 THEN 'inbox-seeker' ELSE 'inbox-provider' END,
                CASE WHEN n % 2 = 0 THEN 'seeker' ELSE 'provider' END,
                'message ' || n, CASE WHEN n = 3 THEN 'sent' ELSE 'read' END, 'text',
                s.last_activity_at, now() + interval '1 day'
         FROM work_sessions s CROSS JOIN generate_series(1, 4) n",
    )
    .execute(&stack.pool)
    .await?;
    sqlx::query("ANALYZE").execute(&stack.pool).await?;

    let token = stack.token("inbox-seeker", Role::Seeker);
    let http = reqwest::Client::new();
    let base = format!("http://{}", stack.gateway);
    let mut deep_cursor = None;
    let mut first_page = Histogram::<u64>::new(3)?;
    let mut deep_page = Histogram::<u64>::new(3)?;
    for call in 0..CALLS * 2 {
        let deep = call % 2 == 1;
        let url = match (&deep_cursor, deep) {
            (Some(cursor), true) => format!("{base}/api/conversations?limit=20&before={cursor}"),
            _ => format!("{base}/api/conversations?limit=20"),
        };
        let started = Instant::now();
        let answer: serde_json::Value = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let elapsed = started.elapsed().as_micros() as u64;
        let listed = answer["conversations"].as_array().map_or(0, Vec::len);
        anyhow::ensure!(listed == 20, "a page of 20, got {listed}: {answer}");
        if deep_cursor.is_none() {
            // A cursor about 1,000 sessions deep, from the database's own ordering.
            let (at, id): (chrono::DateTime<chrono::Utc>, uuid::Uuid) = sqlx::query_as(
                "SELECT last_activity_at, session_id FROM work_sessions WHERE seeker_id = 'inbox-seeker'
                 ORDER BY last_activity_at DESC, session_id DESC OFFSET 1000 LIMIT 1",
            )
            .fetch_one(&stack.pool)
            .await?;
            deep_cursor = Some(format!("{}_{id}", at.timestamp_micros()));
        }
        if call >= 20 {
            let histogram = if deep {
                &mut deep_page
            } else {
                &mut first_page
            };
            histogram.record(elapsed)?;
        }
    }
    println!(
        "inbox of a seeker with {ENDED_SESSIONS} ended sessions (page of 20, through the gateway):"
    );
    println!(
        "  first page:      p50 {:.1} ms  p99 {:.1} ms",
        crate::millis(&first_page, 0.5),
        crate::millis(&first_page, 0.99)
    );
    println!(
        "  1,000 deep:      p50 {:.1} ms  p99 {:.1} ms",
        crate::millis(&deep_page, 0.5),
        crate::millis(&deep_page, 0.99)
    );
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON)
         SELECT s.session_id, lm.seq, u.unread_count
         FROM (SELECT session_id, work_id, connection_state, last_activity_at FROM work_sessions
               WHERE seeker_id = 'inbox-seeker' AND (chat_expires_at IS NULL OR chat_expires_at > now())
               ORDER BY last_activity_at DESC, session_id DESC LIMIT 21) s
         JOIN work_orders o ON o.work_id = s.work_id
         LEFT JOIN LATERAL (SELECT seq FROM chat_messages WHERE session_id = s.session_id
                            AND (expires_at IS NULL OR expires_at > now()) ORDER BY seq DESC LIMIT 1) lm ON true
         CROSS JOIN LATERAL (SELECT count(*) AS unread_count FROM chat_messages
                             WHERE session_id = s.session_id AND delivery_status <> 'read'
                               AND sender_type NOT IN ('seeker', 'system')) u",
    )
    .fetch_all(&stack.pool)
    .await?;
    println!("  query plan of the first page (the inbox's query, columns trimmed):");
    for line in plan {
        println!("    {line}");
    }
    Ok(())
}
