//! Chat end-to-end latency: seekers send at a steady total rate, providers receive; the delay from
//! sending `chat_message` to the other party's `chat_message` is measured per rate step, and the
//! highest rate whose p99 stays under 50 ms is reported. Also CPU per message of the gateway and
//! the chat worker.
//!
//! Knobs: BENCH_SESSIONS (20), BENCH_RATES ("250,500,1000,1500,2000,3000"), BENCH_SECONDS (10).

use crate::{cpu_seconds, millis};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use system_tests::{StackOptions, TestStack};
use tokio_tungstenite::tungstenite::Message;

fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

pub async fn run() -> anyhow::Result<()> {
    let sessions: usize = knob("BENCH_SESSIONS", 20);
    let seconds: u64 = knob("BENCH_SECONDS", 10);
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| String::from("250,500,1000,1500,2000,3000"))
        .split(',')
        .filter_map(|rate| rate.trim().parse().ok())
        .collect();
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle", "chat"])).await;
    let origin = Instant::now();
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let received = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for index in 0..sessions {
        let (seeker, provider, session_id, _) = stack
            .session(&format!("bs{index}"), &format!("bp{index}"))
            .await;
        let (writer, mut seeker_reader) = seeker.into_socket().split();
        // The sender's own confirmations must be read, or its socket's queue fills up.
        tokio::spawn(async move { while seeker_reader.next().await.is_some() {} });
        let (_, mut provider_reader) = provider.into_socket().split();
        let (histogram, received) = (histogram.clone(), received.clone());
        tokio::spawn(async move {
            while let Some(Ok(message)) = provider_reader.next().await {
                // Pings from the gateway arrive too (the provider sends nothing); skip them.
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else {
                    continue;
                };
                if frame["type"] != "chat_message" {
                    continue;
                }
                let sent_at: u64 = frame["message"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let now = origin.elapsed().as_micros() as u64;
                if let Ok(mut histogram) = histogram.lock() {
                    let _ = histogram.record(now.saturating_sub(sent_at).max(1));
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
        });
        writers.push((Arc::new(tokio::sync::Mutex::new(writer)), session_id));
    }
    let gateway = stack.gateway_pid().unwrap_or(0);
    let chat = stack.worker_pids("chat").first().copied().unwrap_or(0);
    println!(
        "chat end-to-end latency: {sessions} sessions, {seconds} s per step, send -> other party's chat_message"
    );
    println!(
        "{:>8} {:>10} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "rate/s", "delivered/s", "p50 ms", "p99 ms", "p99.9 ms", "gateway us/msg", "chat us/msg"
    );
    let mut best = None;
    // The first step would otherwise pay for cold caches and connection set-up.
    let warm_up = rates.first().copied().map(|rate| (rate, true));
    for (rate, discard) in warm_up
        .into_iter()
        .chain(rates.iter().map(|rate| (*rate, false)))
    {
        if let Ok(mut histogram) = histogram.lock() {
            histogram.reset();
        }
        let before = (
            received.load(Ordering::Relaxed),
            cpu_seconds(gateway),
            cpu_seconds(chat),
        );
        let interval = Duration::from_secs_f64(sessions as f64 / rate as f64);
        let step_seconds = if discard { 3 } else { seconds };
        let deadline = Instant::now() + Duration::from_secs(step_seconds);
        let mut senders = Vec::new();
        for (offset, (writer, session_id)) in writers.iter().enumerate() {
            let (writer, session_id) = (writer.clone(), session_id.clone());
            senders.push(tokio::spawn(async move {
                tokio::time::sleep(interval.mul_f64(offset as f64 / sessions as f64)).await;
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while Instant::now() < deadline {
                    ticker.tick().await;
                    let sent_at = origin.elapsed().as_micros().to_string();
                    let frame = json!({"type": "chat_message", "session_id": session_id, "message": sent_at});
                    if writer.lock().await.send(Message::text(frame.to_string())).await.is_err() {
                        break;
                    }
                }
            }));
        }
        for sender in senders {
            let _ = sender.await;
        }
        // Let the step's messages drain before reading the numbers.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let delivered = received.load(Ordering::Relaxed) - before.0;
        if discard {
            continue;
        }
        let (p50, p99, p999) = match histogram.lock() {
            Ok(histogram) => (
                millis(&histogram, 0.5),
                millis(&histogram, 0.99),
                millis(&histogram, 0.999),
            ),
            Err(_) => (0.0, 0.0, 0.0),
        };
        let per_message = |cpu_before: f64, pid: u32| {
            (cpu_seconds(pid) - cpu_before) * 1e6 / delivered.max(1) as f64
        };
        println!(
            "{:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>12.0} {:>12.0}",
            rate,
            delivered as f64 / seconds as f64,
            p50,
            p99,
            p999,
            per_message(before.1, gateway),
            per_message(before.2, chat)
        );
        if p99 < 50.0 && delivered as f64 >= 0.95 * (rate * seconds) as f64 {
            best = Some(rate);
        } else if p99 > 1000.0 {
            println!("(stopping: the system is saturated)");
            break;
        }
    }
    match best {
        Some(rate) => println!("highest rate sustained with p99 < 50 ms: {rate} msg/s"),
        None => println!("no step kept p99 under 50 ms"),
    }
    Ok(())
}
