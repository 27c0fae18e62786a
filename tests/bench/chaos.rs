//! Chaos under chat load (issue 20): `CHAOS_SECS` (600) of `CHAOS_RATE` (500) messages a second
//! over `CHAOS_PAIRS` (100) pairs (5 a second per seeker, inside the contract's limits), with two
//! chat and one lifecycle instance. Every `CHAOS_KILL_EVERY_SECS` (3) a chat instance is SIGKILLed
//! and a new one started (a lifecycle instance every fourth time); a quarter of the way in the
//! nats-server is restarted (its store kept), half-way Postgres goes away for 5 s (every
//! connection cut, as a restart does), three quarters of the way it turns read-only for 10 s (as
//! after a failover) with every connection ended.
//!
//! The clients do what a phone does ([`ResilientChat`]): resend what has no `message_sent`
//! (after a reconnect, or 3 s without an answer), resume from the last `seq` they hold, drop
//! repeats. Prints the delay (due -> shown to the provider) for messages due while only kills
//! happen and while each outage lasts, then lost, never confirmed, stored twice, stored out of
//! order and dead-lettered. `CHAOS_OUTAGES=0` leaves out the outages (the kills alone).

use crate::chat::knob;
use crate::millis;
use hdrhistogram::Histogram;
use std::time::Duration;
use system_tests::TestStack;
use system_tests::resilient::ResilientChat;

/// A window of the run in the chat's clock (µs) and what happened in it.
struct Window {
    what: &'static str,
    from: u64,
    to: u64,
}

pub async fn run() -> anyhow::Result<()> {
    let seconds: u64 = knob("CHAOS_SECS", 600);
    let rate: u64 = knob("CHAOS_RATE", 500);
    let pairs: usize = knob("CHAOS_PAIRS", 100);
    let kill_every = Duration::from_secs(knob("CHAOS_KILL_EVERY_SECS", 3).max(1));
    // 0: only the kills (to see what they cost alone).
    let with_outages = knob("CHAOS_OUTAGES", 1) != 0;
    let options = crate::chat::load_options()
        .only(&["lifecycle", "chat", "chat"])
        .through_database_proxy()
        .env("RUST_LOG", "warn,workers::runtime=info");
    let mut stack = TestStack::with(options).await;
    let chat = ResilientChat::start(&stack, vec![stack.gateway.clone()], "x", pairs, rate).await;
    println!(
        "chaos: {rate} msg/s over {pairs} pairs for {seconds} s; a chat instance SIGKILLed every {} s \
         (lifecycle every fourth){}",
        kill_every.as_secs(),
        if with_outages {
            "; NATS restarted at 1/4, Postgres cut for 5 s at 1/2 and read-only for 10 s at 3/4"
        } else {
            ""
        }
    );
    let total = Duration::from_secs(seconds);
    let began = tokio::time::Instant::now();
    let mut outages: Vec<Window> = Vec::new();
    let (mut nats_done, mut cut_done, mut read_only_done) =
        (!with_outages, !with_outages, !with_outages);
    let (mut kills, mut round) = (0u64, 0u64);
    while began.elapsed() < total {
        tokio::time::sleep(kill_every).await;
        round += 1;
        stack.kill_one_worker("chat");
        stack.start_worker("chat");
        kills += 1;
        if round.is_multiple_of(4) {
            stack.kill_one_worker("lifecycle");
            stack.start_worker("lifecycle");
            kills += 1;
        }
        let elapsed = began.elapsed();
        if !nats_done && elapsed >= total / 4 {
            nats_done = true;
            let from = chat.now();
            stack.restart_nats().await;
            outages.push(Window {
                what: "NATS restart",
                from,
                to: chat.now() + 2_000_000,
            });
        } else if !cut_done && elapsed >= total / 2 {
            cut_done = true;
            let from = chat.now();
            if let Some(proxy) = stack.database_proxy.as_ref() {
                proxy.cut();
                tokio::time::sleep(Duration::from_secs(5)).await;
                proxy.restore();
            }
            outages.push(Window {
                what: "Postgres gone 5 s",
                from,
                to: chat.now() + 2_000_000,
            });
        } else if !read_only_done && elapsed >= total * 3 / 4 {
            read_only_done = true;
            let from = chat.now();
            read_only(&stack, true).await?;
            tokio::time::sleep(Duration::from_secs(10)).await;
            read_only(&stack, false).await?;
            outages.push(Window {
                what: "read-only 10 s",
                from,
                to: chat.now() + 2_000_000,
            });
        }
    }
    let ended = chat.now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let outcome = chat.finish(Duration::from_secs(30)).await;
    let stored = stack.stored_client_messages().await;
    let out_of_order = stack.stored_out_of_order().await;
    let dead = stack.dead_letters().await.len();

    let in_outage = |due: u64| outages.iter().any(|w| (w.from..w.to).contains(&due));
    let mut windows: Vec<(String, Histogram<u64>)> = Vec::new();
    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 600_000_000, 3);
    let mut kills_only = new_histogram()?;
    let mut all = new_histogram()?;
    for (due, delay) in &outcome.arrivals {
        let _ = all.record(*delay);
        if *due <= ended && !in_outage(*due) {
            let _ = kills_only.record(*delay);
        }
    }
    windows.push((String::from("every message"), all));
    windows.push((String::from("kills only"), kills_only));
    for window in &outages {
        let mut histogram = new_histogram()?;
        for (due, delay) in &outcome.arrivals {
            if (window.from..window.to).contains(due) {
                let _ = histogram.record(*delay);
            }
        }
        windows.push((window.what.to_owned(), histogram));
    }
    println!(
        "\n{:<20} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "messages due", "count", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (label, histogram) in &windows {
        println!(
            "{label:<20} {:>8} {:>8.1} {:>8.1} {:>9.1} {:>9.1}",
            histogram.len(),
            millis(histogram, 0.5),
            millis(histogram, 0.99),
            millis(histogram, 0.999),
            histogram.max() as f64 / 1000.0
        );
    }
    println!(
        "\n{kills} workers SIGKILLed; sent {}, lost {} (never shown to the provider), never confirmed {}, \
         stored {stored} (twice: {}), stored out of the sender's order {out_of_order}, \
         dead-lettered {dead}; repeats dropped by seq {}, reconnects {}",
        outcome.sent,
        outcome.lost,
        outcome.unconfirmed,
        (stored - outcome.sent as i64).max(0),
        outcome.repeats,
        outcome.reconnects,
    );
    Ok(())
}

/// Turns the stack's database read-only (or writable again) and ends every connection to it, as
/// a failover does: sessions opened before keep their old setting.
async fn read_only(stack: &TestStack, on: bool) -> anyhow::Result<()> {
    let name = stack.database_name();
    let setting = if on { "on" } else { "off" };
    let statement = format!(
        "BEGIN READ WRITE; ALTER DATABASE {name} SET default_transaction_read_only = {setting}; COMMIT"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&stack.pool)
        .await?;
    let terminate = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(terminate))
        .execute(&stack.pool)
        .await?;
    Ok(())
}
