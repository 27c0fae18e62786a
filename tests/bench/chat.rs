//! Chat end-to-end latency and throughput: seekers send at a steady total rate, providers receive;
//! the delay from sending `chat_message` to the other party's `chat_message` is measured per rate
//! step. A step is sustained when p99 <= 50 ms and every message sent arrived. Reported: the
//! highest sustained rate, p50/p99 per step and the CPU each process spent per message. A second
//! ramp has every provider answer each message with `message_delivered` and `message_read`.
//!
//! The default shape is real use (issue 19): `BENCH_SESSIONS` (1,000) ordinary conversations with
//! every socket inside the contract's limits (20 frames/s: 5,000 msg/s is 5 a second per seeker).
//! `BENCH_SHAPE=hot` keeps the old shape for comparison: 50 sessions, limits raised.
//! Each step also reports Postgres' WAL bytes per message (`pg_stat_wal`, the whole server) and the
//! share of `work_sessions` updates that were HOT (`pg_stat_user_tables`, this run's database).
//!
//! Knobs: BENCH_SHAPE (realistic), BENCH_SESSIONS (1000, or 50 hot), BENCH_IDLE_SOCKETS (0), BENCH_RATES
//! ("1000,2000,3000,5000,7500,10000"), BENCH_RECEIPT_RATES ("1000,2000,2500,3000,4000"),
//! BENCH_SECONDS (10).

use crate::{cpu_seconds, cpu_ticks, millis, rss_kib, steal_percent};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use system_tests::{StackOptions, TestStack};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Writer =
    Arc<tokio::sync::Mutex<SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>>>;

pub fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn rates(name: &str, default: &str) -> Vec<u64> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|rate| rate.trim().parse().ok())
        .collect()
}

/// CPU seconds of every Postgres server process (the benchmark is alone on the machine).
fn postgres_cpu_seconds() -> f64 {
    crate::postgres_pids().into_iter().map(cpu_seconds).sum()
}

/// The fields of a server frame the load client reads.
#[derive(serde::Deserialize)]
struct Received<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    message: Option<&'a str>,
    #[serde(default, borrow)]
    message_id: Option<&'a str>,
}

pub struct Shared {
    origin: Instant,
    histogram: Mutex<Histogram<u64>>,
    received: AtomicU64,
    receipts: AtomicBool,
}

/// The stack under load: `sessions` seeker/provider pairs whose providers count what arrives.
pub struct Load {
    pub stack: TestStack,
    pub shared: Arc<Shared>,
    pub writers: Vec<(Writer, String)>,
    pub pids: Pids,
}

/// The stack the chat benchmarks run on.
pub fn load_options() -> StackOptions {
    StackOptions::default()
        // A load generator is not a phone.
        .without_rate_limits()
        // The expiry worker keeps the planner's statistics current, as it does in production.
        .only(&["lifecycle", "chat", "expiry"])
        .env("WS_IDLE_TIMEOUT_SECS", "3600")
        .env("RUST_LOG", "warn")
}

async fn load(sessions: usize) -> anyhow::Result<Load> {
    load_on(TestStack::with(load_options()).await, sessions).await
}

/// The stack of the realistic shape: the contract's limits, as production runs them.
fn realistic_options() -> StackOptions {
    StackOptions::default()
        .only(&["lifecycle", "chat", "expiry"])
        .env("WS_IDLE_TIMEOUT_SECS", "3600")
        .env("RUST_LOG", "warn")
}

/// `sessions` seeker/provider pairs on `stack` whose providers count what arrives.
pub async fn load_on(stack: TestStack, sessions: usize) -> anyhow::Result<Load> {
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        histogram: Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?),
        received: AtomicU64::new(0),
        receipts: AtomicBool::new(false),
    });
    let mut writers: Vec<(Writer, String)> = Vec::new();
    for index in 0..sessions {
        let (seeker, provider, session_id, _) = stack
            .session(&format!("bs{index}"), &format!("bp{index}"))
            .await;
        let (writer, mut seeker_reader) = seeker.into_socket().split();
        // The sender's own confirmations (and status updates) must be read, or its queue fills up.
        tokio::spawn(async move { while seeker_reader.next().await.is_some() {} });
        let (mut provider_writer, mut provider_reader) = provider.into_socket().split();
        let (shared, session) = (shared.clone(), session_id.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = provider_reader.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                // The load client shares the machine: read only the fields it needs.
                let Ok(frame) = serde_json::from_str::<Received>(&text) else {
                    continue;
                };
                if frame.kind != "chat_message" {
                    continue;
                }
                let sent_at: u64 = frame.message.and_then(|t| t.parse().ok()).unwrap_or(0);
                let now = shared.origin.elapsed().as_micros() as u64;
                if let Ok(mut histogram) = shared.histogram.lock() {
                    let _ = histogram.record(now.saturating_sub(sent_at).max(1));
                }
                shared.received.fetch_add(1, Ordering::Relaxed);
                if shared.receipts.load(Ordering::Relaxed) {
                    let message_id = frame.message_id.unwrap_or_default();
                    for kind in ["message_delivered", "message_read"] {
                        let receipt =
                            json!({"type": kind, "message_id": message_id, "session_id": session});
                        let _ = provider_writer
                            .send(Message::text(receipt.to_string()))
                            .await;
                    }
                }
            }
        });
        writers.push((Arc::new(tokio::sync::Mutex::new(writer)), session_id));
    }
    let pids = Pids {
        gateway: stack.gateway_pid().unwrap_or(0),
        chat: stack.worker_pids("chat").first().copied().unwrap_or(0),
        notify: stack.worker_pids("notify").first().copied().unwrap_or(0),
        nats: stack.nats_pid(),
        bench: std::process::id(),
        database: stack.pool.clone(),
    };
    Ok(Load {
        stack,
        shared,
        writers,
        pids,
    })
}

pub async fn run() -> anyhow::Result<()> {
    let hot = std::env::var("BENCH_SHAPE").is_ok_and(|shape| shape == "hot");
    let sessions: usize = knob("BENCH_SESSIONS", if hot { 50 } else { 1000 });
    let seconds: u64 = knob("BENCH_SECONDS", 10);
    let plain_rates = rates("BENCH_RATES", "1000,2000,3000,5000,7500,10000");
    let receipt_rates = rates("BENCH_RECEIPT_RATES", "1000,2000,2500,3000,4000");
    let mut options = if hot {
        load_options()
    } else {
        realistic_options()
    };
    // `BENCH_WEBHOOKS=1`: a notify worker beside them, delivering to a receiver here (contract
    // section 13: the chat path must lose at most 5 % with webhooks on).
    let webhooks = std::env::var("BENCH_WEBHOOKS").is_ok_and(|on| on == "1");
    let _receiver = if webhooks {
        let receiver = system_tests::webhooks::Receiver::start().await;
        options = options
            .only(&["lifecycle", "chat", "expiry", "notify"])
            .env("WEBHOOK_URL", &receiver.url)
            .env("WEBHOOK_SECRET", system_tests::webhooks::SECRET);
        println!("webhooks on: a notify worker delivers to {}", receiver.url);
        Some(receiver)
    } else {
        None
    };
    let setup = Instant::now();
    let Load {
        stack,
        shared,
        writers,
        pids,
    } = load_on(TestStack::with(options).await, sessions).await?;
    // Quiet sockets beside the talkers (`BENCH_IDLE_SOCKETS`, 0): users who are connected and
    // say nothing, as most of a real deployment's are.
    let idle: usize = knob("BENCH_IDLE_SOCKETS", 0);
    let idle_sockets = connect_idle(&stack, "quiet", idle).await;
    if idle > 0 {
        // Their connect notices are answered before the first step.
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!("{idle} idle sockets connected beside the talkers");
    }
    println!(
        "chat ({} shape): {sessions} seeker/provider pairs{}, {seconds} s per step, send -> other \
         party's chat_message (set up in {:.0} s)",
        if hot { "hot" } else { "realistic" },
        if hot {
            ", the contract's limits raised"
        } else {
            ", every socket inside the contract's limits"
        },
        setup.elapsed().as_secs_f64()
    );
    let best = ramp(&shared, &writers, &pids, &plain_rates, seconds, false, true).await;
    shared.receipts.store(true, Ordering::Relaxed);
    println!("\nwith receipts: every message answered with message_delivered and message_read");
    let best_with_receipts = ramp(
        &shared,
        &writers,
        &pids,
        &receipt_rates,
        seconds,
        true,
        true,
    )
    .await;
    println!();
    for (label, best) in [("chat", best), ("chat with receipts", best_with_receipts)] {
        match best {
            Some(rate) => println!(
                "{label}: highest rate sustained with p99 <= 50 ms and nothing lost: {rate} msg/s"
            ),
            None => println!("{label}: no step kept p99 <= 50 ms with nothing lost"),
        }
    }
    drop(idle_sockets);
    drop(stack);
    Ok(())
}

/// Soak: `SOAK_MINUTES` (10) at `SOAK_RATE` (1,000) msg/s over 50 pairs, with `SOAK_IDLE_SOCKETS`
/// (2,000) idle sockets open besides, one line per minute: latency, loss, CPU per message and the
/// resident memory of the gateway and the chat worker, which must stay flat.
pub async fn soak() -> anyhow::Result<()> {
    let minutes: usize = knob("SOAK_MINUTES", 10);
    let rate: u64 = knob("SOAK_RATE", 1000);
    let idle: usize = knob("SOAK_IDLE_SOCKETS", 2000);
    let Load {
        stack,
        shared,
        writers,
        pids,
    } = load(50).await?;
    let idle_sockets = connect_idle(&stack, "idle", idle).await;
    println!(
        "soak: {minutes} min at {rate} msg/s over 50 pairs, {idle} idle sockets besides; one line a minute"
    );
    let steps = vec![rate; minutes];
    // A soak does not stop at a bad minute: it reports every one.
    ramp(&shared, &writers, &pids, &steps, 60, false, false).await;
    drop(idle_sockets);
    Ok(())
}

pub struct Pids {
    gateway: u32,
    chat: u32,
    /// The notify worker (0: not running; its column reads 0).
    notify: u32,
    nats: u32,
    bench: u32,
    /// The run's database, for its statistics.
    database: sqlx::PgPool,
}

/// Postgres' WAL bytes so far (the whole server), and this database's `work_sessions` updates
/// (all, HOT).
async fn database_counters(database: &sqlx::PgPool) -> (i64, i64, i64) {
    let wal: i64 = sqlx::query_scalar("SELECT wal_bytes::bigint FROM pg_stat_wal")
        .fetch_one(database)
        .await
        .unwrap_or(0);
    let (updates, hot): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'work_sessions'",
    )
    .fetch_one(database)
    .await
    .unwrap_or((0, 0));
    (wal, updates, hot)
}

impl Pids {
    fn cpu(&self) -> [f64; 6] {
        [
            cpu_seconds(self.gateway),
            cpu_seconds(self.chat),
            cpu_seconds(self.notify),
            cpu_seconds(self.nats),
            postgres_cpu_seconds(),
            cpu_seconds(self.bench),
        ]
    }
}

/// Runs the steps of one ramp (stopping once saturated when `ramping`); returns the highest
/// sustained rate.
pub async fn ramp(
    shared: &Arc<Shared>,
    writers: &[(Writer, String)],
    pids: &Pids,
    rates: &[u64],
    seconds: u64,
    receipts: bool,
    ramping: bool,
) -> Option<u64> {
    println!(
        "{:>8} {:>9} {:>7} {:>8} {:>8} {:>9} | {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} | {:>7} {:>6} | {:>7} | {:>7} {:>8}",
        "rate/s",
        "sent/s",
        "lost",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "gw us",
        "chat us",
        "notify us",
        "nats us",
        "pg us",
        "load us",
        "WAL B",
        "HOT %",
        "steal %",
        "gw MiB",
        "chat MiB"
    );
    let sessions = writers.len();
    let mut best = None;
    // The first step would otherwise pay for cold caches and connection set-up.
    let warm_up = rates.first().copied().map(|rate| (rate, true));
    for (rate, discard) in warm_up
        .into_iter()
        .chain(rates.iter().map(|rate| (*rate, false)))
    {
        if let Ok(mut histogram) = shared.histogram.lock() {
            histogram.reset();
        }
        let received_before = shared.received.load(Ordering::Relaxed);
        let cpu_before = pids.cpu();
        let counters_before = database_counters(&pids.database).await;
        let ticks_before = cpu_ticks();
        let sent = Arc::new(AtomicU64::new(0));
        let interval = Duration::from_secs_f64(sessions as f64 / rate as f64);
        let step_seconds = if discard { 3 } else { seconds };
        let deadline = Instant::now() + Duration::from_secs(step_seconds);
        let mut senders = Vec::new();
        for (offset, (writer, session_id)) in writers.iter().enumerate() {
            let (writer, session_id, sent, shared) = (
                writer.clone(),
                session_id.clone(),
                sent.clone(),
                shared.clone(),
            );
            senders.push(tokio::spawn(async move {
                tokio::time::sleep(interval.mul_f64(offset as f64 / sessions as f64)).await;
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while Instant::now() < deadline {
                    ticker.tick().await;
                    let sent_at = shared.origin.elapsed().as_micros().to_string();
                    let frame = json!({"type": "chat_message", "session_id": session_id, "message": sent_at});
                    if writer.lock().await.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for sender in senders {
            let _ = sender.await;
        }
        let sent = sent.load(Ordering::Relaxed);
        // Let the step's messages drain before reading the numbers.
        let drain_until = Instant::now() + Duration::from_secs(5);
        while shared.received.load(Ordering::Relaxed) - received_before < sent
            && Instant::now() < drain_until
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if receipts {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let delivered = shared.received.load(Ordering::Relaxed) - received_before;
        if discard {
            continue;
        }
        let (p50, p99, p999) = match shared.histogram.lock() {
            Ok(histogram) => (
                millis(&histogram, 0.5),
                millis(&histogram, 0.99),
                millis(&histogram, 0.999),
            ),
            Err(_) => (0.0, 0.0, 0.0),
        };
        let cpu_after = pids.cpu();
        let steal = steal_percent(ticks_before, cpu_ticks());
        // Postgres publishes its statistics at most once a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let counters_after = database_counters(&pids.database).await;
        let wal_per_message =
            (counters_after.0 - counters_before.0) as f64 / delivered.max(1) as f64;
        let updates = counters_after.1 - counters_before.1;
        let hot_share = if updates > 0 {
            (counters_after.2 - counters_before.2) as f64 * 100.0 / updates as f64
        } else {
            0.0
        };
        let per_message: Vec<f64> = cpu_before
            .iter()
            .zip(cpu_after.iter())
            .map(|(before, after)| (after - before) * 1e6 / delivered.max(1) as f64)
            .collect();
        let lost = sent.saturating_sub(delivered);
        println!(
            "{:>8} {:>9.0} {:>7} {:>8.2} {:>8.2} {:>9.2} | {:>8.0} {:>8.0} {:>9.0} {:>8.0} {:>8.0} {:>8.0} | {:>7.0} {:>6.1} | {:>7.1} | {:>7.1} {:>8.1}",
            rate,
            sent as f64 / seconds as f64,
            lost,
            p50,
            p99,
            p999,
            per_message[0],
            per_message[1],
            per_message[2],
            per_message[3],
            per_message[4],
            per_message[5],
            wal_per_message,
            hot_share,
            steal,
            rss_kib(pids.gateway) as f64 / 1024.0,
            rss_kib(pids.chat) as f64 / 1024.0
        );
        if p99 <= 50.0 && lost == 0 && sent as f64 >= 0.95 * (rate * seconds) as f64 {
            best = Some(rate);
        } else if ramping && (p99 > 1000.0 || lost > sent / 20) {
            println!("(stopping: the system is saturated)");
            break;
        }
    }
    best
}

/// `count` sockets of distinct users (`<prefix><n>`, seekers and providers in turn) that stay
/// connected and say nothing.
async fn connect_idle(stack: &TestStack, prefix: &str, count: usize) -> Vec<system_tests::Client> {
    let mut sockets = Vec::with_capacity(count);
    for index in 0..count {
        let role = if index % 2 == 0 {
            shared::auth::Role::Seeker
        } else {
            shared::auth::Role::Provider
        };
        sockets.push(stack.connect(&format!("{prefix}{index}"), role).await);
    }
    sockets
}
