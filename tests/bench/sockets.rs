//! Gateway memory per idle socket: opens BENCH_SOCKETS (5000) authenticated sockets of distinct
//! users and compares the gateway's resident memory before and after.

use crate::rss_kib;
use shared::auth::Role;
use std::time::Duration;
use system_tests::{Client, StackOptions, TestStack};

pub async fn run() -> anyhow::Result<()> {
    let count: usize = std::env::var("BENCH_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let gateway = stack.gateway_pid().unwrap_or(0);
    // Warm up allocator and runtime with a few sockets first.
    let mut sockets = Vec::new();
    for index in 0..50 {
        sockets.push(stack.connect(&format!("warm{index}"), Role::Seeker).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(gateway);
    for index in 0..count {
        let token = stack.token(&format!("idle{index}"), Role::Seeker);
        match Client::connect(&stack.gateway, Role::Seeker, &token).await {
            Ok(client) => sockets.push(client),
            Err(refused) => anyhow::bail!("socket {index} refused: {refused:?}"),
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(gateway);
    let per_socket = (after.saturating_sub(before)) as f64 / count as f64;
    println!(
        "gateway RSS: {before} KiB with 50 sockets, {after} KiB with {} sockets",
        count + 50
    );
    println!(
        "idle socket cost: {per_socket:.1} KiB per socket (user-space; the kernel adds its socket buffers)"
    );
    Ok(())
}
