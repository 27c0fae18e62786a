//! Chat load from clients that do what the contract asks of a phone app across restarts, for the
//! rolling-restart benchmark and test: a socket closed by a restarting gateway (1012) reconnects to
//! a gateway at once; the seeker sends again every message that has no `message_sent` yet (same
//! `client_message_id`), the provider sends `resume` from the last `seq` it holds, marks what it
//! shows delivered and drops repeats by `seq`. A message's delay counts from the moment it was due
//! to be sent, so time spent reconnecting shows in the numbers. Also the restart itself
//! ([`TestStack::rolling_restart`]).

use crate::TestStack;
use crate::stack::{ExtraGateway, WORKER_KINDS};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use shared::auth::Role;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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
                crate::client::endpoint(self.role),
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

/// A message without its `message_sent` this long is sent again (same `client_message_id`), as a
/// phone does when an answer does not come (a refusal while NATS was away, a lost frame).
const RESEND_AFTER: Duration = Duration::from_secs(3);

/// Sends one message every `interval` from `start` until the tally stops sending, again every
/// message not yet confirmed after each reconnect, and again any not confirmed within
/// `RESEND_AFTER`; returns how many stayed unconfirmed when `give_up` came.
async fn seeker(
    mut party: Party,
    start: tokio::time::Instant,
    interval: Duration,
    give_up: Arc<tokio::sync::Notify>,
) -> usize {
    let tally = party.tally.clone();
    // number -> (frame, when it was last sent)
    let mut unconfirmed: BTreeMap<u64, (String, tokio::time::Instant)> = BTreeMap::new();
    let mut number: u64 = 0;
    let mut socket = party.connect().await;
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut overdue = tokio::time::interval(Duration::from_secs(1));
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
                    unconfirmed.insert(number, (frame.clone(), tokio::time::Instant::now()));
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                    disconnected = socket.send(Message::text(frame)).await.is_err();
                }
            }
            now = overdue.tick() => {
                for (frame, sent_at) in unconfirmed.values_mut() {
                    if now.saturating_duration_since(*sent_at) >= RESEND_AFTER {
                        *sent_at = now;
                        if socket.send(Message::text(frame.clone())).await.is_err() {
                            disconnected = true;
                            break;
                        }
                    }
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
            let now = tokio::time::Instant::now();
            for (frame, sent_at) in unconfirmed.values_mut() {
                *sent_at = now;
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

/// `pairs` seeker/provider pairs chatting at `rate` messages a second in all, their sockets
/// spread over `gateways`.
pub struct ResilientChat {
    tally: Arc<Tally>,
    seekers: Vec<tokio::task::JoinHandle<usize>>,
    providers: Vec<tokio::task::JoinHandle<()>>,
    give_up: Arc<tokio::sync::Notify>,
}

/// What a [`ResilientChat`] saw, once finished.
pub struct Outcome {
    pub sent: u64,
    /// Sent, never shown to the provider.
    pub lost: u64,
    /// Sent, never confirmed by `message_sent`.
    pub unconfirmed: usize,
    /// Messages shown again (same `seq`) and dropped by the provider.
    pub repeats: u64,
    pub reconnects: u64,
    /// (when it was due to be sent, delay until the provider had it), in µs, per message shown.
    pub arrivals: Vec<(u64, u64)>,
}

impl ResilientChat {
    /// Creates the pairs' sessions (users `<prefix>s<n>` / `<prefix>p<n>`) and starts chatting.
    pub async fn start(
        stack: &TestStack,
        gateways: Vec<String>,
        prefix: &str,
        pairs: usize,
        rate: u64,
    ) -> ResilientChat {
        let gateways = Arc::new(gateways);
        let mut sessions = Vec::new();
        for index in 0..pairs {
            let (seeker, provider) = (format!("{prefix}s{index}"), format!("{prefix}p{index}"));
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
        for (index, (seeker_token, provider_token, session_id)) in sessions.into_iter().enumerate()
        {
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
        tokio::time::sleep_until(start).await;
        ResilientChat {
            tally,
            seekers,
            providers,
            give_up,
        }
    }

    /// Microseconds since the chat's clock started (the time base of [`Outcome::arrivals`]).
    pub fn now(&self) -> u64 {
        self.tally.micros(tokio::time::Instant::now())
    }

    /// Stops sending, waits up to `grace` for every message to be confirmed and shown, and says
    /// what happened.
    pub async fn finish(self, grace: Duration) -> Outcome {
        let tally = self.tally;
        tally.sending.store(false, Ordering::Relaxed);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline
            && (self.seekers.iter().any(|seeker| !seeker.is_finished())
                || tally.shown.load(Ordering::Relaxed) < tally.sent.load(Ordering::Relaxed))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.give_up.notify_waiters();
        let mut unconfirmed = 0;
        for seeker in self.seekers {
            unconfirmed += seeker.await.unwrap_or(0);
        }
        for provider in self.providers {
            provider.abort();
        }
        let sent = tally.sent.load(Ordering::Relaxed);
        Outcome {
            sent,
            lost: sent.saturating_sub(tally.shown.load(Ordering::Relaxed)),
            unconfirmed,
            repeats: tally.repeats.load(Ordering::Relaxed),
            reconnects: tally.reconnects.load(Ordering::Relaxed),
            arrivals: tally
                .arrivals
                .lock()
                .map(|arrivals| arrivals.clone())
                .unwrap_or_default(),
        }
    }
}

/// One step of a rolling restart.
pub struct Restart {
    /// "gateway 2", "chat 1", ...
    pub what: String,
    /// When it began, on the clock passed to [`TestStack::rolling_restart`].
    pub began: u64,
    /// Seconds from SIGTERM until the new process was started (a gateway: listening).
    pub seconds: f64,
    /// Whether the old process exited on SIGTERM (else it was killed after 15 s).
    pub exited: bool,
}

impl TestStack {
    /// Restarts every gateway (this stack's, then `extra`) and every instance of every worker
    /// kind, one at a time, as a deploy does: SIGTERM, wait for the exit, start the new process,
    /// wait `pause`. `clock` stamps each step.
    pub async fn rolling_restart(
        &mut self,
        extra: &mut [ExtraGateway],
        pause: Duration,
        clock: impl Fn() -> u64,
    ) -> Vec<Restart> {
        let wait = Duration::from_secs(15);
        let mut steps = Vec::new();
        let mut step = |what: String, began: Instant, at: u64, exited: bool| {
            steps.push(Restart {
                what,
                began: at,
                seconds: began.elapsed().as_secs_f64(),
                exited,
            });
        };
        let (began, at) = (Instant::now(), clock());
        let exited = self.restart_gateway(wait).await;
        step(String::from("gateway 1"), began, at, exited);
        tokio::time::sleep(pause).await;
        for (index, gateway) in extra.iter_mut().enumerate() {
            let (began, at) = (Instant::now(), clock());
            let exited = gateway.restart(wait).await;
            step(format!("gateway {}", index + 2), began, at, exited);
            tokio::time::sleep(pause).await;
        }
        for kind in WORKER_KINDS {
            for instance in 1..=self.worker_pids(kind).len() {
                let (began, at) = (Instant::now(), clock());
                let exited = self.terminate_one_worker(kind, wait).await;
                self.start_worker(kind);
                step(format!("{kind} {instance}"), began, at, exited);
                tokio::time::sleep(pause).await;
            }
        }
        steps
    }

    /// Chat messages sent with a `client_message_id` that are stored (numbers, `1..`, per sender).
    pub async fn stored_client_messages(&self) -> i64 {
        self.count("SELECT count(*) FROM chat_messages WHERE client_message_id IS NOT NULL")
            .await
    }

    /// Stored messages whose `client_message_id` (a number counting up per sender) is not above
    /// that of the message before them in their session: stored out of their sender's order.
    pub async fn stored_out_of_order(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM (SELECT client_message_id::bigint AS number, \
             lag(client_message_id::bigint) OVER (PARTITION BY session_id ORDER BY seq) AS before \
             FROM chat_messages WHERE client_message_id IS NOT NULL) numbered \
             WHERE number <= before",
        )
        .await
    }
}
