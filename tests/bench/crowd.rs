//! 100,000 idle sockets (issue 12): `CROWD_SOCKETS` sockets of distinct users spread over as many
//! gateway processes as it takes at `CROWD_PER_GATEWAY` each (one process may open 20,000 files
//! here), held for `CROWD_HOLD_SECS` with the gateways' pings answered. The load is spread over
//! client processes too (`bench crowd-client`, one per gateway, each from a source address of its
//! own, 127.0.0.<10+k>: one address has ~28,000 ports towards one server port). Prints the
//! gateways' memory per socket, then chat latency at `CROWD_CHAT_RATE` msg/s over
//! `CROWD_CHAT_PAIRS` seeker/provider pairs on the first gateway beside the crowd, and finally
//! how many crowd sockets were still open at the end.

use crate::chat::{knob, load_on, load_options, ramp};
use crate::rss_kib;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use shared::auth::Role;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use system_tests::TestStack;

pub async fn run() -> anyhow::Result<()> {
    let total: usize = knob("CROWD_SOCKETS", 100_000);
    let per_gateway: usize = knob("CROWD_PER_GATEWAY", 15_000);
    let hold: u64 = knob("CROWD_HOLD_SECS", 60);
    let chat_pairs: usize = knob("CROWD_CHAT_PAIRS", 500);
    let chat_rate: u64 = knob("CROWD_CHAT_RATE", 1000);
    let gateways_needed = total.div_ceil(per_gateway).max(1);
    let stack = TestStack::with(load_options().env("WS_IDLE_TIMEOUT_SECS", "70")).await;
    let mut extra = Vec::new();
    for _ in 1..gateways_needed {
        extra.push(stack.extra_gateway(&stack.nats_address()).await);
    }
    let mut gateways: Vec<(String, u32)> =
        vec![(stack.gateway.clone(), stack.gateway_pid().unwrap_or(0))];
    gateways.extend(
        extra
            .iter()
            .map(|gateway| (gateway.address.clone(), gateway.pid())),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before: Vec<u64> = gateways.iter().map(|(_, pid)| rss_kib(*pid)).collect();
    // Every socket is announced to the workers (`user.<id>.connected`): their memory must not
    // grow with the connects.
    let workers: Vec<(&str, u32)> = ["chat", "lifecycle"]
        .iter()
        .flat_map(|kind| {
            stack
                .worker_pids(kind)
                .into_iter()
                .map(move |pid| (*kind, pid))
        })
        .collect();
    let workers_before: Vec<u64> = workers.iter().map(|(_, pid)| rss_kib(*pid)).collect();
    println!(
        "crowd: {total} idle sockets over {} gateway processes, held {hold} s",
        gateways.len()
    );

    let started = Instant::now();
    let executable = std::env::current_exe()?;
    let mut clients = Vec::new();
    for (index, (address, _)) in gateways.iter().enumerate() {
        let first = index * per_gateway;
        let count = per_gateway.min(total.saturating_sub(first));
        let child = Command::new(&executable)
            .args(["crowd-client", address])
            .arg(first.to_string())
            .arg(count.to_string())
            .arg(format!("127.0.0.{}", 10 + index))
            .arg(hold.to_string())
            .stdout(Stdio::piped())
            .spawn()?;
        clients.push(child);
    }
    // Each client says `open <opened> <failed>` when its sockets are open, `alive <n>` at the end.
    let mut lines = Vec::new();
    for client in &mut clients {
        let stdout = client.stdout.take().expect("piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        lines.push(receiver);
    }
    let mut opened = 0;
    let mut failed = 0;
    for receiver in &lines {
        let line = tokio::task::block_in_place(|| receiver.recv())?;
        let mut fields = line.split_whitespace().skip(1);
        opened += fields
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        failed += fields
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    println!(
        "opened {opened} sockets ({failed} refused or failed) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut grown = 0u64;
    for ((address, pid), before) in gateways.iter().zip(&before) {
        let after = rss_kib(*pid);
        grown += after.saturating_sub(*before);
        println!("  gateway {address}: {before} -> {after} KiB");
    }
    println!(
        "gateway memory: {:.1} KiB per idle socket ({} MiB for {opened} sockets)",
        grown as f64 / opened.max(1) as f64,
        grown / 1024
    );
    for ((kind, pid), before) in workers.iter().zip(&workers_before) {
        println!(
            "  {kind} worker after the connects: {before} -> {} KiB",
            rss_kib(*pid)
        );
    }

    // Chat beside the crowd, on the first gateway.
    let load = load_on(stack, chat_pairs).await?;
    println!(
        "\nchat beside the crowd: {chat_pairs} pairs ({} users) on the first gateway",
        chat_pairs * 2
    );
    ramp(
        &load.shared,
        &load.writers,
        &load.pids,
        &[chat_rate],
        10,
        false,
        false,
    )
    .await;

    let mut alive = 0;
    for receiver in &lines {
        let line = tokio::task::block_in_place(|| receiver.recv())?;
        alive += line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
    }
    for mut client in clients {
        let _ = client.wait();
    }
    println!(
        "after {hold} s: {alive} of {opened} crowd sockets still open (pings answered; none dropped: {})",
        alive == opened
    );
    drop(extra);
    Ok(())
}

/// `bench crowd-client <gateway> <first user> <count> <source address> <hold secs>`: opens the
/// sockets, says `open <opened> <failed>`, keeps them (answering pings) for the hold, says
/// `alive <still open>`.
pub async fn client() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [gateway, first, count, source, hold] = args.as_slice() else {
        anyhow::bail!("usage: bench crowd-client <gateway> <first> <count> <source> <hold secs>");
    };
    let gateway_address: std::net::SocketAddr = gateway.parse()?;
    let source: std::net::IpAddr = source.parse()?;
    let first: usize = first.parse()?;
    let count: usize = count.parse()?;
    let hold: u64 = hold.parse()?;
    let closed = Arc::new(AtomicUsize::new(0));
    let mut pending = FuturesUnordered::new();
    let mut next = first;
    let end = first + count;
    let (mut opened, mut failed) = (0usize, 0usize);
    let gateway = gateway.clone();
    loop {
        while pending.len() < 128 && next < end {
            let token = shared::auth::mint(
                system_tests::stack::JWT_SECRET,
                &format!("crowd{next}"),
                Role::Seeker,
                None,
                3600,
            )?;
            let url = format!("ws://{gateway}/ws/work/seeker/?token={token}");
            pending.push(async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(std::net::SocketAddr::new(source, 0))?;
                let stream = socket.connect(gateway_address).await?;
                let (websocket, _) = tokio_tungstenite::client_async(url, stream).await?;
                anyhow::Ok(websocket)
            });
            next += 1;
        }
        let Some(result) = pending.next().await else {
            break;
        };
        match result {
            Ok(mut websocket) => {
                opened += 1;
                let closed = closed.clone();
                // Reading answers the gateway's pings (tungstenite queues the pong).
                tokio::spawn(async move {
                    while let Some(Ok(_)) = websocket.next().await {}
                    closed.fetch_add(1, Ordering::Relaxed);
                });
            }
            Err(_) => failed += 1,
        }
    }
    println!("open {opened} {failed}");
    tokio::time::sleep(Duration::from_secs(hold)).await;
    println!("alive {}", opened - closed.load(Ordering::Relaxed));
    Ok(())
}
