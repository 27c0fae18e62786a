//! Memory per idle socket: opens BENCH_SOCKETS (5000) authenticated sockets of distinct users
//! against the whole stack (every worker kind) and compares, before and after, the proportional
//! set size (PSS: shared pages split between the processes sharing them) of every process an idle
//! socket touches: the gateway, each worker, nats-server (the connect notices, the presence bucket)
//! and Postgres (all its processes: what the connect handlers read and write). Then the same
//! number of Socket.IO sockets (contract section 11), opened as socket.io-client does over its
//! WebSocket transport, each connected to the default namespace with its token (gateway only).

use crate::{pss_kib, rss_kib};
use futures::{SinkExt, StreamExt};
use shared::auth::Role;
use std::time::Duration;
use system_tests::{Client, StackOptions, TestStack};
use tokio_tungstenite::tungstenite::Message;

type SocketIoStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One Socket.IO v5 socket over Engine.IO 4's WebSocket transport: the server's open packet
/// (`0{...}`), our namespace connect with the token (`40{"token"}`), the server's `40{"sid"}`.
async fn socketio_socket(gateway: &str, token: &str) -> anyhow::Result<SocketIoStream> {
    let url = format!("ws://{gateway}/socket.io/?EIO=4&transport=websocket");
    let (mut stream, _) = tokio_tungstenite::connect_async(url).await?;
    expect_packet(&mut stream, "0{").await?;
    let connect = format!("40{}", serde_json::json!({ "token": token }));
    stream.send(Message::text(connect)).await?;
    expect_packet(&mut stream, "40{").await?;
    Ok(stream)
}

/// Waits for a packet starting with `prefix`, answering Engine.IO pings (`2`) on the way.
async fn expect_packet(stream: &mut SocketIoStream, prefix: &str) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == "2" => {
                stream.send(Message::text("3")).await?;
            }
            Ok(Some(Ok(Message::Text(text)))) if text.starts_with(prefix) => return Ok(()),
            other => anyhow::bail!("expected a {prefix:?} packet, got {other:?}"),
        }
    }
}

/// Keeps an idle Socket.IO socket alive: answers the server's pings until the socket closes.
async fn answer_pings(mut stream: SocketIoStream) {
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Text(text) = message
            && text.as_str() == "2"
            && stream.send(Message::text("3")).await.is_err()
        {
            return;
        }
    }
}

/// The processes an idle socket touches, by name: the gateway, each worker kind, nats-server and
/// every Postgres process of the machine (the cluster's shared buffers are shared between them).
fn processes(stack: &TestStack) -> Vec<(String, Vec<u32>)> {
    let mut processes = vec![
        (
            "gateway".to_string(),
            stack.gateway_pid().into_iter().collect(),
        ),
        ("nats-server".to_string(), vec![stack.nats_pid()]),
    ];
    for kind in system_tests::stack::WORKER_KINDS {
        processes.push((kind.to_string(), stack.worker_pids(kind)));
    }
    processes.push(("postgres".to_string(), crate::postgres_pids()));
    processes
}

/// This process's limit of open files (`ulimit -n`), from /proc.
fn open_file_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|line| line.starts_with("Max open files"))
                .and_then(|line| line.split_whitespace().nth(3))
                .and_then(|soft| soft.parse().ok())
        })
        .unwrap_or(usize::MAX)
}

/// PSS of a set of processes; Postgres' are looked up again (backends come and go).
fn pss_sum(name: &str, pids: &[u32]) -> u64 {
    let current = if name == "postgres" {
        crate::postgres_pids()
    } else {
        pids.to_vec()
    };
    current.iter().map(|pid| pss_kib(*pid)).sum()
}

pub async fn run() -> anyhow::Result<()> {
    let count: usize = std::env::var("BENCH_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let stack = TestStack::with(StackOptions::default()).await;
    let gateway = stack.gateway_pid().unwrap_or(0);
    // Warm up allocator and runtime with a few sockets first.
    let mut sockets = Vec::new();
    for index in 0..50 {
        sockets.push(stack.connect(&format!("warm{index}"), Role::Seeker).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let processes = processes(&stack);
    let pss_before: Vec<u64> = processes
        .iter()
        .map(|(name, pids)| pss_sum(name, pids))
        .collect();
    let before = rss_kib(gateway);
    for index in 0..count {
        let token = stack.token(&format!("idle{index}"), Role::Seeker);
        match Client::connect(&stack.gateway, Role::Seeker, &token).await {
            Ok(client) => sockets.push(client),
            Err(refused) => anyhow::bail!("socket {index} refused: {refused:?}"),
        }
    }
    // The connect notices are handled by then; what is left is what an idle socket keeps.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = rss_kib(gateway);
    let per_socket = (after.saturating_sub(before)) as f64 / count as f64;
    println!(
        "gateway RSS: {before} KiB with 50 sockets, {after} KiB with {} sockets",
        count + 50
    );
    println!(
        "idle socket cost: {per_socket:.1} KiB per socket (user-space; the kernel adds its socket buffers)"
    );
    println!(
        "PSS per idle socket, every process it touches ({count} sockets, 10 s after the last):"
    );
    let mut total = 0.0;
    for ((name, pids), before) in processes.iter().zip(&pss_before) {
        let after = pss_sum(name, pids);
        let per = after as f64 - *before as f64;
        total += per;
        println!(
            "  {name:<12} {before:>9} -> {after:>9} KiB  {:>6.2} KiB per socket",
            per / count as f64
        );
    }
    println!(
        "  in all       {:.2} KiB per idle socket",
        total / count as f64
    );

    // The native sockets stay open (the gateway's growth is measured from here): as many Socket.IO
    // sockets again as this process may still open files for.
    let room = open_file_limit().saturating_sub(count + 500);
    let count = count.min(room);
    if count == 0 {
        println!("no Socket.IO sockets: this process may open no more files");
        return Ok(());
    }
    let before = rss_kib(gateway);
    let mut socketio = Vec::with_capacity(count);
    for index in 0..count {
        let token = stack.token(&format!("sio{index}"), Role::Seeker);
        match socketio_socket(&stack.gateway, &token).await {
            Ok(stream) => socketio.push(tokio::spawn(answer_pings(stream))),
            Err(error) => anyhow::bail!("Socket.IO socket {index} refused: {error}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(gateway);
    let per_socketio = (after.saturating_sub(before)) as f64 / count as f64;
    println!(
        "gateway RSS: {after} KiB with {} more Socket.IO sockets",
        count
    );
    println!(
        "idle Socket.IO socket cost: {per_socketio:.1} KiB per socket (native: {per_socket:.1} KiB)"
    );
    for socket in &socketio {
        anyhow::ensure!(
            !socket.is_finished(),
            "the gateway closed an idle Socket.IO socket"
        );
    }
    for socket in socketio {
        socket.abort();
    }
    Ok(())
}
