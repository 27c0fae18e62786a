//! Distance worker cost and delay: N active sessions; every second each party sends a location
//! (the seeker moves 60 m, so each of its frames triggers an update; the provider stands still, so
//! its frames are only recorded). Reports the distance worker's CPU per 1,000 location frames and
//! the delay from the seeker's `location_update` until both parties have the `distance_update`.
//!
//! Knobs: BENCH_SESSIONS ("100,500,1000"), BENCH_SECONDS (15).

use crate::{cpu_seconds, millis};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use system_tests::{StackOptions, TestStack};
use tokio_tungstenite::tungstenite::Message;

const METER: f64 = 1.0 / 111_195.0;

/// When the last triggering frame left, and how many parties have heard about it since.
struct Pending {
    sent_at: AtomicU64,
    heard: AtomicU64,
}

pub async fn run() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let steps: Vec<usize> = std::env::var("BENCH_SESSIONS")
        .unwrap_or_else(|_| String::from("100,500,1000"))
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    println!("distance worker: each party sends a location every second, {seconds} s per step");
    println!(
        "{:>9} {:>10} {:>14} {:>10} {:>10} {:>10}",
        "sessions", "frames/s", "CPU ms/1000", "p50 ms", "p99 ms", "updates"
    );
    for sessions in steps {
        step(sessions, seconds).await?;
    }
    Ok(())
}

async fn step(sessions: usize, seconds: u64) -> anyhow::Result<()> {
    let stack = TestStack::with(
        StackOptions::default()
            // A load generator is not a phone.
            .without_rate_limits()
            .only(&["lifecycle", "distance"])
            .env("DISTANCE_TICK_SECS", "3600"),
    )
    .await;
    let origin = Instant::now();
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let mut parties = Vec::new();
    for index in 0..sessions {
        let (seeker, provider, session_id, _) = stack
            .session(&format!("ds{index}"), &format!("dp{index}"))
            .await;
        let pending = Arc::new(Pending {
            sent_at: AtomicU64::new(0),
            heard: AtomicU64::new(0),
        });
        let (seeker_writer, seeker_reader) = seeker.into_socket().split();
        let (provider_writer, provider_reader) = provider.into_socket().split();
        for mut reader in [seeker_reader, provider_reader] {
            let (pending, histogram) = (pending.clone(), histogram.clone());
            tokio::spawn(async move {
                while let Some(Ok(message)) = reader.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    if !text.contains("\"distance_update\"") {
                        continue;
                    }
                    if pending.heard.fetch_add(1, Ordering::AcqRel) == 1 {
                        let delay = (origin.elapsed().as_micros() as u64)
                            .saturating_sub(pending.sent_at.load(Ordering::Acquire));
                        if let Ok(mut histogram) = histogram.lock() {
                            let _ = histogram.record(delay.max(1));
                        }
                    }
                }
            });
        }
        parties.push((seeker_writer, provider_writer, session_id, pending));
    }
    let frame = |session_id: &str, latitude: f64| {
        Message::text(json!({"type": "location_update", "session_id": session_id, "latitude": latitude, "longitude": 77.0}).to_string())
    };
    // Both positions become known (first update), outside the measurement.
    for (seeker, provider, session_id, _) in parties.iter_mut() {
        provider.send(frame(session_id, 28.0)).await?;
        seeker.send(frame(session_id, 28.0 + 500.0 * METER)).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Ok(mut histogram) = histogram.lock() {
        histogram.reset();
    }
    let distance = stack.worker_pids("distance").first().copied().unwrap_or(0);
    let cpu_before = cpu_seconds(distance);
    let frames_sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (offset, (mut seeker, mut provider, session_id, pending)) in parties.into_iter().enumerate()
    {
        let frames_sent = frames_sent.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(offset as f64 / sessions as f64)).await;
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            let mut away = false;
            while Instant::now() < deadline {
                ticker.tick().await;
                away = !away;
                let latitude = 28.0 + if away { 560.0 } else { 500.0 } * METER;
                pending.heard.store(0, Ordering::Release);
                pending
                    .sent_at
                    .store(origin.elapsed().as_micros() as u64, Ordering::Release);
                if seeker.send(frame(&session_id, latitude)).await.is_err()
                    || provider.send(frame(&session_id, 28.0)).await.is_err()
                {
                    break;
                }
                frames_sent.fetch_add(2, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_seconds(distance) - cpu_before;
    let frames = frames_sent.load(Ordering::Relaxed);
    if let Ok(histogram) = histogram.lock() {
        println!(
            "{:>9} {:>10.0} {:>14.1} {:>10.2} {:>10.2} {:>10}",
            sessions,
            frames as f64 / seconds as f64,
            cpu * 1000.0 / frames.max(1) as f64 * 1000.0,
            millis(&histogram, 0.5),
            millis(&histogram, 0.99),
            histogram.len()
        );
    }
    Ok(())
}
