//! `bench webhooks` (contract section 13): how fast the notify worker empties the outbox. Events
//! for `BENCH_RECIPIENTS` (1,000) offline users are recorded at `BENCH_EVENTS_PER_SEC` (2,000) for
//! `BENCH_SECONDS` (20), as the lifecycle worker records them (one `webhook_events` row each,
//! batched every 50 ms); a receiver on this machine answers 2xx and a 500 to every
//! `BENCH_FAIL_EVERY`-th (20th) request. Reported: events delivered per second while they came,
//! delay from the event to its 2xx (p50/p95/p99: a 500 waits for the contract's first retry, 5 s),
//! and duplicates. `BENCH_NOTIFY_INSTANCES` (1) notify workers deliver.
//!
//! The chat benchmark with webhooks on is `BENCH_WEBHOOKS=1 scripts/bench.sh chat` (a notify
//! worker beside the chat workers, delivering to a receiver like this one).

use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use system_tests::webhooks::{Receiver, SECRET};
use system_tests::{StackOptions, TestStack};

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

pub async fn run() -> anyhow::Result<()> {
    let recipients = knob("BENCH_RECIPIENTS", 1000);
    let rate = knob("BENCH_EVENTS_PER_SEC", 2000);
    let seconds = knob("BENCH_SECONDS", 20);
    let fail_every = knob("BENCH_FAIL_EVERY", 20) as usize;
    let instances = knob("BENCH_NOTIFY_INSTANCES", 1) as usize;
    let receiver = Receiver::start().await;
    receiver.fail_every(fail_every);
    let workers = vec!["notify"; instances.max(1)];
    let stack = TestStack::with(
        StackOptions::default()
            .only(&workers)
            .env("WEBHOOK_URL", &receiver.url)
            .env("WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "warn"),
    )
    .await;
    let per_tick = (rate / 20).max(1) as i64;
    let mut ticks = tokio::time::interval(Duration::from_millis(50));
    let started = Instant::now();
    let mut recorded = 0i64;
    while started.elapsed() < Duration::from_secs(seconds) {
        ticks.tick().await;
        sqlx::query(
            "INSERT INTO webhook_events (event_type, user_id, role, data)
             SELECT 'work.assigned', 'bench-' || (($1 + n) % $3), 'provider',
                    jsonb_build_object('user_id', 'bench-' || (($1 + n) % $3), 'role', 'provider',
                                       'session_id', NULL, 'work_id', $1 + n)
             FROM generate_series(1, $2) AS n",
        )
        .bind(recorded)
        .bind(per_tick)
        .bind(recipients as i64)
        .execute(&stack.pool)
        .await?;
        recorded += per_tick;
    }
    let produced_for = started.elapsed();
    let delivered_while_producing = delivered_ids(&receiver).len();
    // Then the rest, retries included (the contract's first retry is 5 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while (delivered_ids(&receiver).len() as i64) < recorded && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let received = receiver.received();
    let mut delays = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    let mut delivered: HashMap<&str, u32> = HashMap::new();
    let mut unverified = 0;
    for request in &received {
        if !request.verified {
            unverified += 1;
        }
        if !(200..300).contains(&request.status) {
            continue;
        }
        *delivered.entry(request.webhook_id.as_str()).or_default() += 1;
        let occurred = request.body["timestamp"]
            .as_str()
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
        if let Some(occurred) = occurred {
            let millis = (request.at_wall - occurred.with_timezone(&chrono::Utc))
                .num_milliseconds()
                .max(1) as u64;
            let _ = delays.record(millis);
        }
    }
    let duplicates: u32 = delivered.values().map(|count| count - 1).sum();
    let failed = received.iter().filter(|r| r.status >= 500).count();
    println!(
        "recipients {recipients}, {rate} events/s for {seconds} s, a 500 every {fail_every} requests, {instances} notify instance(s)"
    );
    println!(
        "| recorded | delivered | delivered/s while recording | 500s answered | delay p50 | p95 | p99 | max | duplicates | bad signatures |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {recorded} | {} | {:.0} | {failed} | {} ms | {} ms | {} ms | {} ms | {duplicates} | {unverified} |",
        delivered.len(),
        delivered_while_producing as f64 / produced_for.as_secs_f64(),
        delays.value_at_quantile(0.5),
        delays.value_at_quantile(0.95),
        delays.value_at_quantile(0.99),
        delays.max(),
    );
    Ok(())
}

fn delivered_ids(receiver: &Receiver) -> std::collections::HashSet<String> {
    receiver
        .received()
        .into_iter()
        .filter(|request| (200..300).contains(&request.status))
        .map(|request| request.webhook_id)
        .collect()
}
