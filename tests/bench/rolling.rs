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
use hdrhistogram::Histogram;
use std::time::Duration;
use system_tests::TestStack;
use system_tests::resilient::ResilientChat;
use system_tests::stack::{ExtraGateway, WORKER_KINDS};

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
    let chat = ResilientChat::start(&stack, addresses, "r", pairs, rate).await;
    println!(
        "rolling: {rate} msg/s over {pairs} pairs on {gateway_count} gateways, {instances} instances \
         of every worker kind; {} s of load, then each process restarted in turn ({} s apart)",
        baseline.as_secs(),
        pause.as_secs()
    );
    tokio::time::sleep(baseline).await;
    let restarts_began = chat.now();
    let steps = stack
        .rolling_restart(&mut extra, pause, || chat.now())
        .await;
    let restarts_ended = chat.now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let outcome = chat.finish(Duration::from_secs(15)).await;
    let stored = stack.stored_client_messages().await;
    let out_of_order = stack.stored_out_of_order().await;
    let arrivals = &outcome.arrivals;
    println!(
        "{:<22} {:>9} | messages due until the next step: {:>6} {:>8} {:>8} {:>9}",
        "restarted", "took s", "count", "p50 ms", "p99 ms", "max ms"
    );
    for (index, step) in steps.iter().enumerate() {
        let until = steps
            .get(index + 1)
            .map_or(restarts_ended, |next| next.began);
        let (count, [p50, p99, _, max]) = delays(arrivals, step.began, until);
        println!(
            "{:<22} {:>9.2} | {:>33} {count:>6} {p50:>8.2} {p99:>8.2} {max:>9.2}{}",
            step.what,
            step.seconds,
            "",
            if step.exited {
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
        let (count, [p50, p99, p999, max]) = delays(arrivals, from, to);
        println!("{label:<20} {count:>8} {p50:>8.2} {p99:>8.2} {p999:>9.2} {max:>9.2}");
    }
    println!(
        "\nsent {}, lost {} (never shown to the provider), never confirmed {}, \
         stored {stored} (twice: {}), stored out of the sender's order {out_of_order}; \
         repeats dropped by seq {}, reconnects {}",
        outcome.sent,
        outcome.lost,
        outcome.unconfirmed,
        (stored - outcome.sent as i64).max(0),
        outcome.repeats,
        outcome.reconnects,
    );
    Ok(())
}
