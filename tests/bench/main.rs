//! Benchmarks that report numbers (not timed tests). Each starts its own stack with the release
//! binaries (`scripts/bench.sh` builds them) against the machine's Postgres and a local
//! nats-server, drives it through real sockets, and prints a table.
//!
//!   bench chat      end-to-end chat latency at steady rates, and the highest rate with p99 < 50 ms
//!   bench distance  distance worker CPU per 1,000 location updates and update delay p50/p99
//!   bench sockets   memory per idle socket in every process it touches (PSS)
//!   bench crowd     100,000 idle sockets across gateway processes for a minute, and chat beside them
//!   bench soak      ten minutes of chat at 1,000 msg/s beside 2,000 idle sockets: memory stays flat
//!   bench inbox     the inbox of a seeker with 2,000 ended sessions: latency and query plan
//!   bench rolling   every gateway and worker restarted in turn under 1,000 msg/s: lost, delays
//!   bench abuse     one attacker per attack of issue 21 beside 100 pairs chatting at 200 msg/s
//!   bench webhooks  the notify worker: 2,000 webhook events/s for 1,000 offline users, some 5xx:
//!                   delivered/s, delay p50/p99 (BENCH_WEBHOOKS=1 bench chat: chat with webhooks on)
//!   bench chaos     10 minutes at 500 msg/s with workers SIGKILLed every 3 s, NATS restarted,
//!                   Postgres cut and made read-only: lost, duplicated, reordered, dead-lettered

mod abuse;
mod chaos;
mod chat;
mod crowd;
mod distance;
mod inbox;
mod rolling;
mod sockets;
mod webhooks;

use hdrhistogram::Histogram;

/// Reads a process's consumed CPU time (user + system) in seconds from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, i.e. 11 and 12 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

/// The machine's CPU time so far as (stolen by the hypervisor, all) in ticks, from /proc/stat.
/// A virtual machine whose host is busy loses CPU to it ("steal"); the benchmark prints the share
/// per step, since it moves the latencies from one run to the next more than any change does.
pub fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return (0, 0);
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice: guests are inside user.
    let total = fields.iter().take(8).sum();
    (fields.get(7).copied().unwrap_or(0), total)
}

/// Percent of the machine's CPU time stolen by the hypervisor between two `cpu_ticks` readings.
pub fn steal_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    after.0.saturating_sub(before.0) as f64 * 100.0 / total
}

/// Every Postgres process of the machine (the server's, not only this run's database's: they
/// share its buffers).
pub fn postgres_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "postgres")
        })
        .collect()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size of a process in KiB (its private pages, plus each shared page divided
/// by the number of processes mapping it), from `smaps_rollup`.
pub fn pss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// The number after `label` in a /proc file of `label value kB` lines (0 if missing).
fn kib_field(path: &str, label: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|line| line.starts_with(label))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse().ok())
        })
        .unwrap_or(0)
}

pub fn millis(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let which = std::env::args().nth(1).unwrap_or_default();
    match which.as_str() {
        "chat" => chat::run().await,
        "distance" => distance::run().await,
        "sockets" => sockets::run().await,
        "crowd" => crowd::run().await,
        "crowd-client" => crowd::client().await,
        "soak" => chat::soak().await,
        "inbox" => inbox::run().await,
        "rolling" => rolling::run().await,
        "chaos" => chaos::run().await,
        "abuse" => abuse::run().await,
        "webhooks" => webhooks::run().await,
        _ => {
            eprintln!(
                "usage: bench chat|distance|sockets|inbox|soak|crowd|rolling|chaos|abuse|webhooks  (scripts/bench.sh runs the first four)"
            );
            std::process::exit(2);
        }
    }
}
