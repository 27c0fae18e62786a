//! A rolling restart under chat load (issue 12): every gateway and every worker instance is
//! restarted one at a time, as a deploy does (SIGTERM, wait for the exit, start the new version,
//! give it a moment), while `ROLLING_RATE` (1,000) chat messages a second flow over
//! `ROLLING_PAIRS` (50) seeker/provider pairs whose sockets are spread over `ROLLING_GATEWAYS` (2)
//! gateway processes, `ROLLING_INSTANCES` (2) of every worker kind.
//!
//! The clients do what the contract asks of a phone app: a socket closed by a restarting gateway
//! (1012) reconnects to a gateway at once; the seeker sends again every message that has no
//! `message_sent` yet (same `client_message_id`), the provider sends `resume` from the last `seq`
//! it holds, marks what it shows delivered and drops repeats by `seq`. A message's delay counts
//! from the moment it was due to be sent, so time spent reconnecting shows in the numbers.
//!
//! Prints each step, then the delay (due -> shown to the provider) before, during and after the
//! restarts; messages lost (sent, never shown), never confirmed, stored twice or out of the
//! sender's order; and how often sockets reconnected.

use crate::chat::knob;
use crate::millis;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use shared::auth::Role;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use system_tests::TestStack;
use system_tests::stack::{ExtraGateway, WORKER_KINDS};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What every client of the run adds to.
struct Tally {
    origin: Instant,
    /// (when it was due to be sent, delay until the provider had it), both in µs, per message.
    arrivals: Mutex<Vec<(u64, u64)>>,
    sent: AtomicU64,
    shown: AtomicU64,
    repeats: AtomicU64,
    reconnects: AtomicU64,
    /// Turns false when the seekers should stop sending new messages.
    sending: AtomicBool,
}

impl Tally {
    fn micros(&self, at: tokio::time::Instant) -> u64 {
        at.into_std()
            .saturating_duration_since(self.origin)
            .as_micros() as u64
    }
}

/// The fields of a server frame the clients read.
#[derive(serde::Deserialize)]
struct Received<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    seq: Option<i64>,
    #[serde(default, borrow)]
    message: Option<&'a str>,
    #[serde(default, borrow)]
    message_id: Option<&'a str>,
    #[serde(default, borrow)]
    client_message_id: Option<&'a str>,
}

/// One side of a pair: who it is, its session, and the gateways it may connect to.
struct Party {
    tally: Arc<Tally>,
    gateways: Arc<Vec<String>>,
    /// The gateway tried first at the next connect; it moves on at each attempt.
    next_gateway: usize,
    role: Role,
    token: String,
    session_id: String,
}

impl Party {
    /// Connects to the first gateway from `next_gateway` on that accepts, as a phone retries its
    /// balancer; the following reconnect tries another one first.
    async fn connect(&mut self) -> Socket {
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096);
        let mut attempts = 0u32;
        loop {
            let gateway = &self.gateways[self.next_gateway % self.gateways.len()];
            self.next_gateway += 1;
            let url = format!(
                "ws://{gateway}{}?token={}",
                system_tests::client::endpoint(self.role),
                self.token
            );
            if let Ok((socket, _)) =
                tokio_tungstenite::connect_async_with_config(url, Some(config), true).await
            {
                return socket;
            }
            attempts += 1;
            if attempts.is_multiple_of(self.gateways.len() as u32) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Sends one message every `interval` from `start` until the tally stops sending, and again every
/// message not yet confirmed after each reconnect; returns how many stayed unconfirmed when
/// `give_up` came.
async fn seeker(
    mut party: Party,
    start: tokio::time::Instant,
    interval: Duration,
    give_up: Arc<tokio::sync::Notify>,
) -> usize {
    let tally = party.tally.clone();
    let mut unconfirmed: BTreeMap<u64, String> = BTreeMap::new();
    let mut number: u64 = 0;
    let mut socket = party.connect().await;
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sending = true;
    let gave_up = give_up.notified();
    tokio::pin!(gave_up);
    loop {
        let mut disconnected = false;
        tokio::select! {
            due = ticker.tick(), if sending => {
                if !tally.sending.load(Ordering::Relaxed) {
                    sending = false;
                } else {
                    number += 1;
                    let frame = json!({
                        "type": "chat_message", "session_id": party.session_id,
                        "client_message_id": number.to_string(),
                        "message": tally.micros(due).to_string(),
                    })
                    .to_string();
                    unconfirmed.insert(number, frame.clone());
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    disconnected = socket.send(Message::text(frame)).await.is_err();
                }
            }
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(frame) = serde_json::from_str::<Received>(&text)
                        && frame.kind == "message_sent"
                        && let Some(number) = frame.client_message_id.and_then(|id| id.parse().ok())
                    {
                        unconfirmed.remove(&number);
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => disconnected = true,
                Some(Ok(_)) => {}
            },
            () = &mut gave_up => return unconfirmed.len(),
        }
        if !sending && unconfirmed.is_empty() {
            return 0;
        }
        while disconnected {
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
            socket = party.connect().await;
            disconnected = false;
            for frame in unconfirmed.values() {
                if socket.send(Message::text(frame.clone())).await.is_err() {
                    disconnected = true;
                    break;
                }
            }
        }
    }
}

/// Shows the seeker's messages: records each one's delay the first time it arrives, marks it
/// delivered, drops repeats by `seq`, and after a reconnect resumes from the last `seq` it holds
/// with none missing before it.
async fn provider(mut party: Party) {
    let tally = party.tally.clone();
    let mut seen: HashSet<i64> = HashSet::new();
    let mut held_through: i64 = 0;
    let mut first = true;
    loop {
        let mut socket = party.connect().await;
        if !first {
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        first = false;
        let resume =
            json!({"type": "resume", "session_id": party.session_id, "last_seq": held_through});
        if socket
            .send(Message::text(resume.to_string()))
            .await
            .is_err()
        {
            continue;
        }
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                if matches!(message, Message::Close(_)) {
                    break;
                }
                continue;
            };
            let Ok(frame) = serde_json::from_str::<Received>(&text) else {
                continue;
            };
            let Some(seq) = frame.seq else {
                continue;
            };
            match frame.kind {
                "chat_message" if seen.insert(seq) => {
                    let now = tally.micros(tokio::time::Instant::now());
                    let due: u64 = frame.message.and_then(|t| t.parse().ok()).unwrap_or(now);
                    if let Ok(mut arrivals) = tally.arrivals.lock() {
                        arrivals.push((due, now.saturating_sub(due).max(1)));
                    }
                    tally.shown.fetch_add(1, Ordering::Relaxed);
                    let delivered = json!({
                        "type": "message_delivered", "session_id": party.session_id,
                        "message_id": frame.message_id.unwrap_or_default(),
                    });
                    if socket
                        .send(Message::text(delivered.to_string()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                "chat_message" => {
                    tally.repeats.fetch_add(1, Ordering::Relaxed);
                }
                "system_message" => {
                    seen.insert(seq);
                }
                _ => continue,
            }
            while seen.contains(&(held_through + 1)) {
                held_through += 1;
            }
        }
    }
}

/// p50 / p99 / p99.9 / max in ms of the delays of messages due in `[from, to)` µs.
fn delays(arrivals: &[(u64, u64)], from: u64, to: u64) -> (u64, [f64; 4]) {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    for (due, delay) in arrivals {
        if (from..to).contains(due) {
            let _ = histogram.record(*delay);
        }
    }
    (
        histogram.len(),
        [
            millis(&histogram, 0.5),
            millis(&histogram, 0.99),
            millis(&histogram, 0.999),
            histogram.max() as f64 / 1000.0,
        ],
    )
}

pub async fn run() -> anyhow::Result<()> {
    let pairs: usize = knob("ROLLING_PAIRS", 50);
    let rate: u64 = knob("ROLLING_RATE", 1000);
    let gateway_count: usize = knob("ROLLING_GATEWAYS", 2).max(1);
    let instances: usize = knob("ROLLING_INSTANCES", 2).max(1);
    let pause = Duration::from_secs(knob("ROLLING_PAUSE_SECS", 2));
    let baseline = Duration::from_secs(knob("ROLLING_BASELINE_SECS", 10));
    let grace = Duration::from_secs(15);

    let mut workers = Vec::new();
    for kind in WORKER_KINDS {
        workers.extend(std::iter::repeat_n(kind, instances));
    }
    let options = crate::chat::load_options()
        .only(&workers)
        // Each partition's take-over is logged: target/test-logs/<run>/chat-*.log.
        .env("RUST_LOG", "warn,workers::runtime=info");
    let mut stack = TestStack::with(options).await;
    let mut extra: Vec<ExtraGateway> = Vec::new();
    for _ in 1..gateway_count {
        extra.push(stack.extra_gateway(&stack.nats_address()).await);
    }
    let mut addresses = vec![stack.gateway.clone()];
    addresses.extend(extra.iter().map(|gateway| gateway.address.clone()));
    let gateways = Arc::new(addresses);

    let mut sessions = Vec::new();
    for index in 0..pairs {
        let (seeker, provider) = (format!("rs{index}"), format!("rp{index}"));
        // The set-up's own sockets close here; the load's clients open theirs below.
        let (_, _, session_id, _) = stack.session(&seeker, &provider).await;
        sessions.push((
            stack.token(&seeker, Role::Seeker),
            stack.token(&provider, Role::Provider),
            session_id,
        ));
    }

    let tally = Arc::new(Tally {
        origin: Instant::now(),
        arrivals: Mutex::new(Vec::new()),
        sent: AtomicU64::new(0),
        shown: AtomicU64::new(0),
        repeats: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        sending: AtomicBool::new(true),
    });
    let give_up = Arc::new(tokio::sync::Notify::new());
    let interval = Duration::from_secs_f64(pairs as f64 / rate as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let (mut seekers, mut providers) = (Vec::new(), Vec::new());
    for (index, (seeker_token, provider_token, session_id)) in sessions.into_iter().enumerate() {
        let party = |role, next_gateway, token| Party {
            tally: tally.clone(),
            gateways: gateways.clone(),
            next_gateway,
            role,
            token,
            session_id: session_id.clone(),
        };
        providers.push(tokio::spawn(provider(party(
            Role::Provider,
            index + 1,
            provider_token,
        ))));
        seekers.push(tokio::spawn(seeker(
            party(Role::Seeker, index, seeker_token),
            start + interval.mul_f64(index as f64 / pairs as f64),
            interval,
            give_up.clone(),
        )));
    }
    println!(
        "rolling: {rate} msg/s over {pairs} pairs on {gateway_count} gateways, {instances} instances \
         of every worker kind; {} s of load, then each process restarted in turn ({} s apart)",
        baseline.as_secs(),
        pause.as_secs()
    );
    tokio::time::sleep_until(start + baseline).await;

    let restarts_began = tally.micros(tokio::time::Instant::now());
    let wait = Duration::from_secs(15);
    // (what, when it began in µs, seconds until the new process ran, exited on SIGTERM)
    let mut steps: Vec<(String, u64, f64, bool)> = Vec::new();
    let mut step = |what: String, began: Instant, exited: bool| {
        let at = tally.micros(tokio::time::Instant::from_std(began));
        steps.push((what, at, began.elapsed().as_secs_f64(), exited));
    };
    let began = Instant::now();
    let exited = stack.restart_gateway(wait).await;
    step(String::from("gateway 1"), began, exited);
    tokio::time::sleep(pause).await;
    for (index, gateway) in extra.iter_mut().enumerate() {
        let began = Instant::now();
        let exited = gateway.restart(wait).await;
        step(format!("gateway {}", index + 2), began, exited);
        tokio::time::sleep(pause).await;
    }
    for kind in WORKER_KINDS {
        for instance in 1..=instances {
            let began = Instant::now();
            let exited = stack.terminate_one_worker(kind, wait).await;
            stack.start_worker(kind);
            step(format!("{kind} {instance}"), began, exited);
            tokio::time::sleep(pause).await;
        }
    }
    let restarts_ended = tally.micros(tokio::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    tally.sending.store(false, Ordering::Relaxed);

    // Everything sent is confirmed and shown, or the grace runs out.
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && (seekers.iter().any(|seeker| !seeker.is_finished())
            || tally.shown.load(Ordering::Relaxed) < tally.sent.load(Ordering::Relaxed))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    give_up.notify_waiters();
    let mut unconfirmed = 0;
    for seeker in seekers {
        unconfirmed += seeker.await.unwrap_or(0);
    }
    for provider in providers {
        provider.abort();
    }

    let sent = tally.sent.load(Ordering::Relaxed);
    let shown = tally.shown.load(Ordering::Relaxed);
    let stored = stack
        .count("SELECT count(*) FROM chat_messages WHERE client_message_id IS NOT NULL")
        .await;
    let out_of_order = stack
        .count(
            "SELECT count(*) FROM (SELECT client_message_id::bigint AS number, \
             lag(client_message_id::bigint) OVER (PARTITION BY session_id ORDER BY seq) AS before \
             FROM chat_messages WHERE client_message_id IS NOT NULL) numbered \
             WHERE number <= before",
        )
        .await;
    let arrivals = tally
        .arrivals
        .lock()
        .map(|arrivals| arrivals.clone())
        .unwrap_or_default();
    println!(
        "{:<22} {:>9} | messages due until the next step: {:>6} {:>8} {:>8} {:>9}",
        "restarted", "took s", "count", "p50 ms", "p99 ms", "max ms"
    );
    for (index, (what, at, took, exited)) in steps.iter().enumerate() {
        let until = steps.get(index + 1).map_or(restarts_ended, |next| next.1);
        let (count, [p50, p99, _, max]) = delays(&arrivals, *at, until);
        println!(
            "{what:<22} {took:>9.2} | {:>33} {count:>6} {p50:>8.2} {p99:>8.2} {max:>9.2}{}",
            "",
            if *exited {
                ""
            } else {
                "  (did not exit on SIGTERM: killed)"
            }
        );
    }
    println!(
        "\n{:<20} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "messages due", "count", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (label, from, to) in [
        ("before the restarts", 0, restarts_began),
        ("during the restarts", restarts_began, restarts_ended),
        ("after the restarts", restarts_ended, u64::MAX),
    ] {
        let (count, [p50, p99, p999, max]) = delays(&arrivals, from, to);
        println!("{label:<20} {count:>8} {p50:>8.2} {p99:>8.2} {p999:>9.2} {max:>9.2}");
    }
    println!(
        "\nsent {sent}, lost {} (never shown to the provider), never confirmed {unconfirmed}, \
         stored {stored} (twice: {}), stored out of the sender's order {out_of_order}; \
         repeats dropped by seq {}, reconnects {}",
        sent.saturating_sub(shown),
        (stored - sent as i64).max(0),
        tally.repeats.load(Ordering::Relaxed),
        tally.reconnects.load(Ordering::Relaxed),
    );
    Ok(())
}
