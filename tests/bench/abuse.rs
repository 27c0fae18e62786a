//! Hostile clients beside ordinary ones (issue 21): `ABUSE_PAIRS` (100) pairs chat at
//! `ABUSE_RATE` (200) messages a second in all (2 a second per seeker), with the contract's limits
//! on. For `ABUSE_SECS` (20) they chat alone; then for as long again one attacker per attack runs
//! beside them: a `resume` flood over a session of large messages, a flood of 60 KB frames, a flood
//! of binary frames, REST calls as fast as 8 connections go, work orders thrown at one provider,
//! parallel upgrades of one user, and 200 connections that never finish their headers.
//!
//! Prints the victims' delay (due -> shown to the provider) and losses without and with the
//! attackers, what each attacker got (answers by kind), and the peak memory of the gateway and the
//! workers.

use crate::chat::knob;
use crate::{millis, rss_kib};
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use shared::auth::Role;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use system_tests::resilient::ResilientChat;
use system_tests::{StackOptions, TestStack};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// What one attacker got back, by answer.
type Tally = Arc<Mutex<BTreeMap<String, u64>>>;

fn count(tally: &Tally, what: impl Into<String>) {
    if let Ok(mut tally) = tally.lock() {
        *tally.entry(what.into()).or_default() += 1;
    }
}

pub async fn run() -> anyhow::Result<()> {
    let pairs: usize = knob("ABUSE_PAIRS", 100);
    let rate: u64 = knob("ABUSE_RATE", 200);
    let phase = Duration::from_secs(knob("ABUSE_SECS", 20));
    // The contract's limits, as production runs them: only the idle timeout is longer, for the
    // attackers' quiet sockets.
    let options = StackOptions::default()
        .only(&["lifecycle", "chat", "expiry"])
        .env("WS_IDLE_TIMEOUT_SECS", "3600")
        .env("RUST_LOG", "warn");
    let stack = Arc::new(TestStack::with(options).await);
    // The resume attacker's session, filled with large messages before anything is measured.
    let (mut filler, _victim_provider, attack_session, _) =
        stack.session("attack-s", "attack-p").await;
    let large = "字".repeat(4000);
    for index in 0..60 {
        filler
            .send(json!({"type": "chat_message", "session_id": attack_session, "message": large, "client_message_id": format!("big{index}")}))
            .await;
        let _ = filler.find("message_sent", Duration::from_secs(5)).await;
    }
    let chat = ResilientChat::start(&stack, vec![stack.gateway.clone()], "v", pairs, rate).await;
    let pids: Vec<(String, u32)> = ["lifecycle", "chat"]
        .iter()
        .flat_map(|kind| {
            stack
                .worker_pids(kind)
                .into_iter()
                .map(|pid| (kind.to_string(), pid))
        })
        .chain(
            stack
                .gateway_pid()
                .map(|pid| (String::from("gateway"), pid)),
        )
        .collect();
    let peaks: Arc<Mutex<BTreeMap<String, (u64, u64)>>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let attacking = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peaks, sampling, attacking, pids) = (
            peaks.clone(),
            sampling.clone(),
            attacking.clone(),
            pids.clone(),
        );
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let during = attacking.load(Ordering::Relaxed);
                if let Ok(mut peaks) = peaks.lock() {
                    for (name, pid) in &pids {
                        let entry = peaks.entry(name.clone()).or_default();
                        let rss = rss_kib(*pid);
                        if during {
                            entry.1 = entry.1.max(rss);
                        } else {
                            entry.0 = entry.0.max(rss);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    println!(
        "abuse: {rate} msg/s over {pairs} pairs; {} s alone, then {} s beside one attacker per attack",
        phase.as_secs(),
        phase.as_secs()
    );
    tokio::time::sleep(phase).await;
    let attack_began = chat.now();
    attacking.store(true, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers: Vec<(&'static str, Tally, tokio::task::JoinHandle<()>)> = Vec::new();
    let mut attack =
        |name: &'static str, task: Box<dyn FnOnce(Tally) -> tokio::task::JoinHandle<()>>| {
            let tally: Tally = Arc::default();
            let handle = task(tally.clone());
            attackers.push((name, tally, handle));
        };
    {
        let (stack, stop, session) = (stack.clone(), stop.clone(), attack_session.clone());
        attack(
            "resume flood",
            Box::new(move |tally| {
                tokio::spawn(async move {
                    let mut socket = stack.connect("attack-s", Role::Seeker).await;
                    while !stop.load(Ordering::Relaxed) {
                        let resume =
                            json!({"type": "resume", "session_id": session, "last_seq": 0});
                        if !socket.try_send(&resume.to_string()).await {
                            count(&tally, "closed by the gateway");
                            break;
                        }
                        while let Some(frame) = socket
                            .find_any(&["session_state", "error"], Duration::from_millis(20))
                            .await
                        {
                            count(&tally, frame["error"].as_str().unwrap_or("session_state"));
                        }
                    }
                })
            }),
        );
    }
    for (name, binary) in [("60 KB frame flood", false), ("binary frame flood", true)] {
        let (stack, stop) = (stack.clone(), stop.clone());
        attack(
            name,
            Box::new(move |tally| {
                tokio::spawn(async move {
                    let user = if binary { "attack-b" } else { "attack-f" };
                    let url = format!(
                        "ws://{}{}?token={}",
                        stack.gateway,
                        system_tests::client::endpoint(Role::Seeker),
                        stack.token(user, Role::Seeker)
                    );
                    let Ok((socket, _)) = tokio_tungstenite::connect_async(url).await else {
                        count(&tally, "could not connect");
                        return;
                    };
                    let (mut sink, mut stream) = socket.split();
                    let reader_tally = tally.clone();
                    let reader = tokio::spawn(async move {
                        while let Some(Ok(message)) = stream.next().await {
                            match message {
                                Message::Text(text) => {
                                    let frame: serde_json::Value =
                                        serde_json::from_str(&text).unwrap_or_default();
                                    count(
                                        &reader_tally,
                                        frame["error"].as_str().unwrap_or("other"),
                                    );
                                }
                                Message::Close(frame) => {
                                    count(
                                        &reader_tally,
                                        format!("closed {:?}", frame.map(|f| u16::from(f.code))),
                                    );
                                }
                                _ => {}
                            }
                        }
                    });
                    let big = json!({"type": "chat_message", "session_id": uuid::Uuid::new_v4(), "message": "x".repeat(60_000)}).to_string();
                    while !stop.load(Ordering::Relaxed) {
                        let message = if binary {
                            Message::binary(vec![0u8; 1024])
                        } else {
                            Message::text(big.clone())
                        };
                        if sink.send(message).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    reader.abort();
                })
            }),
        );
    }
    {
        let (stack, stop) = (stack.clone(), stop.clone());
        attack(
            "REST flood",
            Box::new(move |tally| {
                tokio::spawn(async move {
                    let token = stack.token("attack-r", Role::Seeker);
                    let mut loops = Vec::new();
                    for _ in 0..8 {
                        let (http, token, stop, tally) =
                            (stack.http(), token.clone(), stop.clone(), tally.clone());
                        loops.push(tokio::spawn(async move {
                            while !stop.load(Ordering::Relaxed) {
                                let reply = http.get("/api/conversations", &token).await;
                                count(&tally, reply.status.to_string());
                            }
                        }));
                    }
                    for one in loops {
                        let _ = one.await;
                    }
                })
            }),
        );
    }
    {
        let (stack, stop) = (stack.clone(), stop.clone());
        attack(
            "work orders at one provider",
            Box::new(move |tally| {
                tokio::spawn(async move {
                    let http = stack.http();
                    let mut index = 0;
                    while !stop.load(Ordering::Relaxed) {
                        index += 1;
                        let seeker = stack.token(&format!("attack-w{}", index % 50), Role::Seeker);
                        let reply = http
                            .post(
                                "/api/work-orders",
                                &seeker,
                                json!({"provider_id": "vp0", "service_type": "Plumbing", "message": "spam", "latitude": 28.7, "longitude": 77.1}),
                            )
                            .await;
                        count(&tally, reply.status.to_string());
                    }
                })
            }),
        );
    }
    {
        let (stack, stop) = (stack.clone(), stop.clone());
        attack(
            "parallel upgrades of one user",
            Box::new(move |tally| {
                tokio::spawn(async move {
                    let url = format!(
                        "ws://{}{}?token={}",
                        stack.gateway,
                        system_tests::client::endpoint(Role::Seeker),
                        stack.token("attack-u", Role::Seeker)
                    );
                    let mut held = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let attempts: Vec<_> = (0..30)
                            .map(|_| {
                                tokio::spawn(system_tests::Client::connect_url_owned(url.clone()))
                            })
                            .collect();
                        for attempt in attempts {
                            match attempt.await {
                                Ok(Ok(client)) => {
                                    count(&tally, "opened");
                                    held.push(client);
                                }
                                Ok(Err(refusal)) => count(&tally, refusal.status.to_string()),
                                Err(_) => count(&tally, "failed"),
                            }
                        }
                        if held.len() > 10 {
                            count(&tally, "OVER THE CAP");
                        }
                        for client in held.drain(..) {
                            client.close().await;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
            }),
        );
    }
    {
        let (stack, stop) = (stack.clone(), stop.clone());
        attack(
            "200 connections with slow headers",
            Box::new(move |tally| {
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    for _ in 0..200 {
                        match tokio::net::TcpStream::connect(&stack.gateway).await {
                            Ok(mut stream) => {
                                let _ = stream.write_all(b"GET /health HTTP/1.1\r\n").await;
                                held.push(stream);
                            }
                            Err(_) => count(&tally, "connect failed"),
                        }
                    }
                    count(&tally, format!("{} held", held.len()));
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    let mut closed = 0;
                    for mut stream in held {
                        let mut buffer = [0u8; 64];
                        if let Ok(Ok(0)) | Ok(Err(_)) = tokio::time::timeout(
                            Duration::from_millis(10),
                            tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
                        )
                        .await
                        {
                            closed += 1;
                        }
                    }
                    count(&tally, format!("{closed} closed by the gateway"));
                })
            }),
        );
    }
    tokio::time::sleep(phase).await;
    let attack_ended = chat.now();
    stop.store(true, Ordering::Relaxed);
    for (_, _, handle) in &mut attackers {
        let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    }
    let outcome = chat.finish(Duration::from_secs(15)).await;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;

    let window = |from: u64, to: u64| -> anyhow::Result<Histogram<u64>> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
        for (due, delay) in &outcome.arrivals {
            if (from..to).contains(due) {
                let _ = histogram.record(*delay);
            }
        }
        Ok(histogram)
    };
    println!(
        "\n{:<22} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "victims' messages due", "count", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (label, histogram) in [
        ("alone", window(0, attack_began)?),
        ("beside the attackers", window(attack_began, attack_ended)?),
    ] {
        println!(
            "{label:<22} {:>8} {:>8.2} {:>8.2} {:>9.2} {:>9.2}",
            histogram.len(),
            millis(&histogram, 0.5),
            millis(&histogram, 0.99),
            millis(&histogram, 0.999),
            histogram.max() as f64 / 1000.0
        );
    }
    println!(
        "victims: sent {}, lost {}, never confirmed {}, repeats {}, reconnects {}",
        outcome.sent, outcome.lost, outcome.unconfirmed, outcome.repeats, outcome.reconnects
    );
    println!("\nwhat each attacker got:");
    for (name, tally, _) in &attackers {
        let tally = tally.lock().map(|tally| tally.clone()).unwrap_or_default();
        println!("  {name:<34} {tally:?}");
    }
    println!("\npeak memory (MiB)      alone   beside the attackers");
    if let Ok(peaks) = peaks.lock() {
        for (name, (alone, during)) in peaks.iter() {
            println!(
                "  {name:<20} {:>6.1} {:>8.1}",
                *alone as f64 / 1024.0,
                *during as f64 / 1024.0
            );
        }
    }
    let stored_big: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(octet_length(last_events)), 0)::bigint FROM partition_cursors",
    )
    .fetch_one(&stack.pool)
    .await?;
    println!("largest stored events of a partition cursor: {stored_big} bytes");
    Ok(())
}
