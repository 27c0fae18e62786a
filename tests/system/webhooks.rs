//! Contract section 13: offline users are told, by signed webhooks. A real HTTP receiver started
//! by the test (`system_tests::webhooks`) records every request and checks its Standard Webhooks
//! signature with the specification's algorithm; the notify worker delivers from the outbox.
//! Timers are shortened: PUSH_AFTER_SECS 1, PRESENCE_GRACE_SECS 1, retries after 0.3 s. The
//! gateway's development receiver, which the web page shows, is tested here too.

use serde_json::{Value, json};
use shared::auth::Role;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use system_tests::webhooks::{Received, Receiver, Reply, SECRET, signature};
use system_tests::{Client, StackOptions, TestStack};

/// Long enough for a webhook to come when it should (sweeps run every second).
const WITHIN: Duration = Duration::from_secs(10);

/// A stack with the workers the events need, delivering to `receiver`.
fn options(receiver: &Receiver) -> StackOptions {
    StackOptions::default()
        .only(&["lifecycle", "chat", "notify"])
        .without_rate_limits()
        .env("WEBHOOK_URL", &receiver.url)
        .env("WEBHOOK_SECRET", SECRET)
        .env("PUSH_AFTER_SECS", "1")
        .env("PUSH_COALESCE_SECS", "60")
        .env("PRESENCE_GRACE_SECS", "1")
        .env("WEBHOOK_RETRY_SCHEDULE", "0.3,0.3,0.3,0.3")
        .env("WEBHOOK_POLL_MS", "50")
        .env("WEBHOOK_TIMEOUT_SECS", "2")
        .env("WEBHOOK_CLAIM_SECS", "3")
}

async fn stack_for(receiver: &Receiver) -> TestStack {
    TestStack::with(options(receiver)).await
}

/// Checks what every webhook must be: signed, JSON, the recipient's own identity only.
#[track_caller]
fn assert_well_formed(received: &Received, event_type: &str, user_id: Option<&str>, role: &str) {
    assert!(received.verified, "signature verifies: {received:?}");
    assert!(received.webhook_id.starts_with("msg_"), "{received:?}");
    assert_eq!(received.content_type, "application/json");
    assert_eq!(received.body["type"], event_type);
    let timestamp = received.body["timestamp"].as_str().expect("timestamp");
    assert!(
        chrono::DateTime::parse_from_rfc3339(timestamp).is_ok() && timestamp.ends_with('Z'),
        "RFC 3339 UTC: {timestamp}"
    );
    assert_eq!(received.data()["user_id"], json!(user_id));
    assert_eq!(received.data()["role"], role);
}

/// The other party's id appears nowhere in the request.
#[track_caller]
fn assert_never_names(received: &Received, other_user_id: &str) {
    assert!(
        !received.body.to_string().contains(other_user_id),
        "the other party's identity leaked: {}",
        received.body
    );
}

/// Makes `provider` active and has `seeker` order from them, over REST only (no sockets: both
/// stay offline). Returns the work id.
async fn order(stack: &TestStack, seeker: &str, provider: &str) -> i64 {
    let http = stack.http();
    http.put(
        "/api/provider/status",
        &stack.token(provider, Role::Provider),
        json!({"is_active": true, "latitude": 28.70, "longitude": 77.10}),
    )
    .await
    .expect_status(200);
    let created = http
        .post(
            "/api/work-orders",
            &stack.token(seeker, Role::Seeker),
            json!({"provider_id": provider, "service_type": "Plumbing", "message": "Leaking tap",
                   "latitude": 28.71, "longitude": 77.11}),
        )
        .await
        .expect_status(201);
    created.body["work_id"].as_i64().expect("work_id")
}

/// Closes a socket and waits out the presence grace: the user is offline from then on.
async fn go_offline(client: Client) {
    client.close().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
}

async fn say(client: &mut Client, session_id: &str, text: &str) -> Value {
    client
        .send(json!({"type": "chat_message", "session_id": session_id, "message": text}))
        .await;
    client.expect("message_sent").await
}

/// Rows of `webhook_events` of one type, by state.
async fn event_states(stack: &TestStack, event_type: &str) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT state, skipped_reason FROM webhook_events WHERE event_type = $1 ORDER BY occurred_at",
    )
    .bind(event_type)
    .fetch_all(&stack.pool)
    .await
    .expect("webhook_events")
}

/// The delivery's (attempts, outcome) once it has one.
async fn outcome(stack: &TestStack, webhook_id: &str) -> (i32, Option<String>) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let row: (i32, Option<String>) = sqlx::query_as(
            "SELECT attempts, outcome FROM webhook_deliveries WHERE webhook_id = $1",
        )
        .bind(webhook_id)
        .fetch_one(&stack.pool)
        .await
        .expect("delivery row");
        if row.1.is_some() || Instant::now() >= deadline {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn work_assigned_reaches_an_offline_provider_signed() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    let work_id = order(&stack, "seek1", "prov1").await;
    let assigned = receiver.first("work.assigned", WITHIN).await;
    assert_well_formed(&assigned, "work.assigned", Some("prov1"), "provider");
    assert_eq!(assigned.data()["work_id"], work_id);
    assert_eq!(assigned.data()["session_id"], Value::Null);
    assert_never_names(&assigned, "seek1");
    let (attempts, delivered) = outcome(&stack, &assigned.webhook_id).await;
    assert_eq!((attempts, delivered.as_deref()), (1, Some("delivered")));
}

#[tokio::test]
async fn no_webhook_for_a_recipient_with_an_open_socket() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    provider.assert_usable().await;
    order(&stack, "seek1", "prov1").await;
    provider.expect("work_assigned").await;
    receiver
        .expect_none("work.assigned", Duration::from_secs(2))
        .await;
    assert_eq!(
        event_states(&stack, "work.assigned").await,
        vec![(String::from("skipped"), Some(String::from("online")))]
    );
}

#[tokio::test]
async fn work_answered_reaches_an_offline_seeker_when_accepted_or_rejected() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    let rejected_work = order(&stack, "seek1", "prov1").await;
    let accepted_work = order(&stack, "seek1", "prov2").await;
    for (provider, work_id, accepted) in [
        ("prov1", rejected_work, false),
        ("prov2", accepted_work, true),
    ] {
        let mut socket = stack.connect(provider, Role::Provider).await;
        socket
            .send(json!({"type": "work_response", "work_id": work_id, "accepted": accepted}))
            .await;
        if accepted {
            socket.expect("work_accepted").await;
        } else {
            socket.assert_usable().await;
        }
    }
    let answered = receiver.wait_for("work.answered", 2, WITHIN).await;
    let by_work = |work_id: i64| {
        answered
            .iter()
            .find(|received| received.data()["work_id"] == work_id)
            .expect("an answer per order")
    };
    let rejected = by_work(rejected_work);
    assert_well_formed(rejected, "work.answered", Some("seek1"), "seeker");
    assert_eq!(rejected.data()["status"], "rejected");
    assert_never_names(rejected, "prov1");
    let accepted = by_work(accepted_work);
    assert_well_formed(accepted, "work.answered", Some("seek1"), "seeker");
    assert_eq!(accepted.data()["status"], "accepted");
    assert!(accepted.data()["session_id"].is_string());
    assert_never_names(accepted, "prov2");
}

#[tokio::test]
async fn work_answered_reaches_an_offline_seeker_when_the_order_expires() {
    let receiver = Receiver::start().await;
    let stack = TestStack::with(
        options(&receiver)
            .only(&["lifecycle", "expiry", "notify"])
            .env("WORK_ORDER_TTL_SECS", "1"),
    )
    .await;
    let work_id = order(&stack, "seek1", "prov1").await;
    let expired = receiver
        .wait_for("work.answered", 1, WITHIN)
        .await
        .remove(0);
    assert_well_formed(&expired, "work.answered", Some("seek1"), "seeker");
    assert_eq!(expired.data()["work_id"], work_id);
    assert_eq!(expired.data()["status"], "expired");
    assert_never_names(&expired, "prov1");
}

/// A session whose seeker has gone offline; the provider's socket stays.
async fn session_with_offline_seeker(stack: &TestStack) -> (Client, String, i64) {
    let (seeker, provider, session_id, work_id) = stack.session("seek1", "prov1").await;
    go_offline(seeker).await;
    (provider, session_id, work_id)
}

#[tokio::test]
async fn message_unread_tells_an_offline_recipient_after_push_after_secs() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    let (mut provider, session_id, work_id) = session_with_offline_seeker(&stack).await;
    say(&mut provider, &session_id, "On my way").await;
    let sent_at = Instant::now();
    let last = say(&mut provider, &session_id, "Five minutes away").await;
    let unread = receiver.first("message.unread", WITHIN).await;
    assert!(
        unread.at.duration_since(sent_at) >= Duration::from_millis(900),
        "not before PUSH_AFTER_SECS"
    );
    assert_well_formed(&unread, "message.unread", Some("seek1"), "seeker");
    assert_eq!(unread.data()["session_id"], session_id.as_str());
    assert_eq!(unread.data()["work_id"], work_id);
    assert_eq!(unread.data()["unread_count"], 2);
    assert_eq!(unread.data()["seq"], last["seq"]);
    assert_eq!(unread.data()["kind"], "text");
    assert!(
        unread.data().get("preview").is_none(),
        "no text without WEBHOOK_INCLUDE_PREVIEW"
    );
    assert_never_names(&unread, "prov1");
    receiver
        .expect_none_after("message.unread", 1, Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn message_unread_is_coalesced_per_recipient_and_session() {
    let receiver = Receiver::start().await;
    let stack = TestStack::with(
        options(&receiver)
            .env("PUSH_COALESCE_SECS", "4")
            .env("WEBHOOK_INCLUDE_PREVIEW", "1"),
    )
    .await;
    let (mut provider, session_id, _) = session_with_offline_seeker(&stack).await;
    say(&mut provider, &session_id, "First").await;
    let first = receiver.first("message.unread", WITHIN).await;
    assert_eq!(first.data()["unread_count"], 1);
    assert_eq!(first.data()["preview"], "First");
    // Inside the window: held back, then announced by the next one after it.
    let long = "x".repeat(150);
    let second_sent = say(&mut provider, &session_id, &long).await;
    receiver
        .expect_none_after("message.unread", 1, Duration::from_secs(2))
        .await;
    let both = receiver.wait_for("message.unread", 2, WITHIN).await;
    let second = &both[1];
    assert!(
        second.at.duration_since(first.at) >= Duration::from_millis(3500),
        "not within PUSH_COALESCE_SECS of the first"
    );
    assert_ne!(second.webhook_id, first.webhook_id);
    assert_eq!(second.data()["unread_count"], 2);
    assert_eq!(second.data()["seq"], second_sent["seq"]);
    assert_eq!(
        second.data()["preview"]
            .as_str()
            .map(|text| text.chars().count()),
        Some(100),
        "the preview is the first 100 characters"
    );
}

#[tokio::test]
async fn no_message_unread_when_the_message_was_read_or_delivered_meanwhile() {
    let receiver = Receiver::start().await;
    let stack = TestStack::with(options(&receiver).env("PUSH_AFTER_SECS", "4")).await;
    let (mut provider, session_id, _) = session_with_offline_seeker(&stack).await;
    // Read over REST (another device, no socket): the seeker stays offline.
    let read = say(&mut provider, &session_id, "Read me").await;
    stack
        .http()
        .post(
            &format!("/api/sessions/{session_id}/read"),
            &stack.token("seek1", Role::Seeker),
            json!({"up_to_seq": read["seq"]}),
        )
        .await
        .expect_status(200);
    // Delivered: the seeker's phone wakes, acknowledges and goes away again at once.
    let sent = say(&mut provider, &session_id, "Deliver me").await;
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    let resent = seeker.expect("chat_message").await;
    assert_eq!(resent["message_id"], sent["message_id"]);
    seeker
        .send(json!({"type": "message_delivered", "message_id": sent["message_id"], "session_id": session_id}))
        .await;
    seeker.assert_usable().await;
    seeker.close().await;
    receiver
        .expect_none("message.unread", Duration::from_secs(7))
        .await;
}

#[tokio::test]
async fn session_ended_reaches_the_offline_party_who_did_not_end_it() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    let (mut provider, session_id, work_id) = session_with_offline_seeker(&stack).await;
    provider
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    provider.expect("connection_cancelled").await;
    let ended = receiver.first("session.ended", WITHIN).await;
    assert_well_formed(&ended, "session.ended", Some("seek1"), "seeker");
    assert_eq!(ended.data()["session_id"], session_id.as_str());
    assert_eq!(ended.data()["work_id"], work_id);
    assert_eq!(ended.data()["connection_state"], "cancelled");
    assert_never_names(&ended, "prov1");
    receiver
        .expect_none_after("session.ended", 1, Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn dispute_opened_reaches_the_mediators_without_a_recipient() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    let (_seeker, _provider, session_id, work_id) = stack.session("seek1", "prov1").await;
    let created = stack
        .http()
        .post(
            &format!("/api/sessions/{session_id}/dispute"),
            &stack.token("seek1", Role::Seeker),
            json!({"reason": "The work was not done"}),
        )
        .await
        .expect_status(201);
    let opened = receiver.first("dispute.opened", WITHIN).await;
    assert_well_formed(&opened, "dispute.opened", None, "mediator");
    assert_eq!(opened.data()["session_id"], session_id.as_str());
    assert_eq!(opened.data()["work_id"], work_id);
    assert_eq!(opened.data()["dispute_id"], created.body["dispute_id"]);
    assert_never_names(&opened, "seek1");
    assert_never_names(&opened, "prov1");
}

#[tokio::test]
async fn session_provider_arrived_reaches_an_offline_seeker() {
    const METER: f64 = 1.0 / 111_195.0;
    let receiver = Receiver::start().await;
    let stack =
        TestStack::with(options(&receiver).only(&["lifecycle", "chat", "distance", "notify"]))
            .await;
    let (mut seeker, mut provider, session_id, work_id) = stack.session("seek1", "prov1").await;
    let fix = |meters_north: f64| {
        json!({"type": "location_update", "session_id": session_id,
               "latitude": 28.61 + meters_north * METER, "longitude": 77.2})
    };
    seeker.send(fix(0.0)).await;
    provider.send(fix(500.0)).await;
    seeker.expect("distance_update").await;
    go_offline(seeker).await;
    for meters in [60.0, 40.0] {
        provider.send(fix(meters)).await;
    }
    provider.expect("provider_arrived").await;
    let arrived = receiver.first("session.provider_arrived", WITHIN).await;
    assert_well_formed(
        &arrived,
        "session.provider_arrived",
        Some("seek1"),
        "seeker",
    );
    assert_eq!(arrived.data()["session_id"], session_id.as_str());
    assert_eq!(arrived.data()["work_id"], work_id);
    assert!(arrived.data()["distance_meters"].as_f64().is_some());
    assert_never_names(&arrived, "prov1");
}

#[tokio::test]
async fn a_500_is_retried_with_the_same_webhook_id() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    receiver.answer_next(&[Reply::Status(500), Reply::Status(503)]);
    order(&stack, "seek1", "prov1").await;
    let attempts = receiver.wait_for("work.assigned", 3, WITHIN).await;
    let ids: HashSet<&str> = attempts.iter().map(|r| r.webhook_id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one webhook-id on every attempt");
    assert!(attempts.iter().all(|attempt| attempt.verified));
    assert_eq!(
        attempts[0].body, attempts[2].body,
        "the same body, timestamp included, on every attempt"
    );
    for pair in attempts.windows(2) {
        assert!(
            pair[1].at.duration_since(pair[0].at) >= Duration::from_millis(200),
            "retried after the schedule's 0.3 s (minus jitter)"
        );
    }
    let (count, delivered) = outcome(&stack, &attempts[0].webhook_id).await;
    assert_eq!((count, delivered.as_deref()), (3, Some("delivered")));
    receiver
        .expect_none_after("work.assigned", 3, Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn retry_after_is_honoured_on_429() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    receiver.answer_next(&[Reply::RetryAfter(429, 2)]);
    order(&stack, "seek1", "prov1").await;
    let attempts = receiver.wait_for("work.assigned", 2, WITHIN).await;
    let waited = attempts[1].at.duration_since(attempts[0].at);
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 honoured, not the 0.3 s schedule ({waited:?})"
    );
    assert_eq!(attempts[0].webhook_id, attempts[1].webhook_id);
    let (count, delivered) = outcome(&stack, &attempts[0].webhook_id).await;
    assert_eq!((count, delivered.as_deref()), (2, Some("delivered")));
}

#[tokio::test]
async fn a_400_is_given_up_at_once() {
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    receiver.answer_next(&[Reply::Status(400)]);
    order(&stack, "seek1", "prov1").await;
    let first = receiver.first("work.assigned", WITHIN).await;
    receiver
        .expect_none_after("work.assigned", 1, Duration::from_secs(2))
        .await;
    let (count, given_up) = outcome(&stack, &first.webhook_id).await;
    assert_eq!((count, given_up.as_deref()), (1, Some("given_up")));
}

#[tokio::test]
async fn the_notify_worker_killed_mid_delivery_and_restarted_loses_nothing() {
    let receiver = Receiver::start().await;
    let mut stack = stack_for(&receiver).await;
    // One delivered before the kill: never sent again.
    order(&stack, "seek1", "prov1").await;
    let before = receiver.first("work.assigned", WITHIN).await;
    let _ = outcome(&stack, &before.webhook_id).await;
    // One in flight when the worker dies: its outcome is unknown, so it comes again, same id.
    receiver.answer_next(&[Reply::Stall(Duration::from_secs(5))]);
    order(&stack, "seek2", "prov2").await;
    receiver.wait_for("work.assigned", 2, WITHIN).await;
    stack.kill_workers("notify");
    // And one recorded while no notify worker runs.
    order(&stack, "seek3", "prov3").await;
    stack.start_worker("notify");
    let all = receiver.wait_for("work.assigned", 4, WITHIN).await;
    let providers: Vec<&str> = all
        .iter()
        .map(|received| received.data()["user_id"].as_str().unwrap_or_default())
        .collect();
    let count = |provider: &str| providers.iter().filter(|p| **p == provider).count();
    assert_eq!(
        count("prov1"),
        1,
        "delivered before the kill: not sent again"
    );
    assert_eq!(count("prov2"), 2, "in flight at the kill: sent again");
    assert_eq!(
        count("prov3"),
        1,
        "recorded meanwhile: sent after the restart"
    );
    let again: Vec<&Received> = all
        .iter()
        .filter(|received| received.data()["user_id"] == "prov2")
        .collect();
    assert_eq!(again[0].webhook_id, again[1].webhook_id);
    receiver
        .expect_none_after("work.assigned", 4, Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn two_notify_instances_deliver_each_event_once() {
    let receiver = Receiver::start().await;
    let mut stack =
        TestStack::with(options(&receiver).only(&["lifecycle", "notify", "notify"])).await;
    // A slow receiver keeps both instances busy at once.
    receiver.answer_next(&vec![Reply::Stall(Duration::from_millis(100)); 30]);
    let mut work_ids = Vec::new();
    for seeker in 0..6 {
        for provider in 0..5 {
            work_ids.push(
                order(
                    &stack,
                    &format!("seek{seeker}"),
                    &format!("prov{seeker}-{provider}"),
                )
                .await,
            );
        }
    }
    let all = receiver.wait_for("work.assigned", 30, WITHIN * 2).await;
    receiver
        .expect_none_after("work.assigned", 30, Duration::from_secs(2))
        .await;
    let ids: HashSet<&str> = all.iter().map(|r| r.webhook_id.as_str()).collect();
    assert_eq!(ids.len(), 30, "each event once");
    let works: HashSet<i64> = all
        .iter()
        .filter_map(|r| r.data()["work_id"].as_i64())
        .collect();
    assert_eq!(works, work_ids.into_iter().collect());
    assert_eq!(stack.worker_pids("notify").len(), 2);
    stack.kill_workers("notify");
}

#[tokio::test]
async fn a_sweep_writing_its_marks_never_holds_up_the_chat() {
    // The unread sweep's `webhook_unread_marks` rows refer to their session: while its transaction
    // is open, Postgres holds a `FOR KEY SHARE` lock on each session it marked. Here a
    // transaction holds that lock on a live session, as a slow sweep would.
    let receiver = Receiver::start().await;
    let stack = stack_for(&receiver).await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let session: uuid::Uuid = session_id.parse().expect("a session id");
    let mut sweep = stack.pool.begin().await.expect("a transaction");
    sqlx::query(
        "INSERT INTO webhook_unread_marks (session_id, role, announced_seq, held)
         VALUES ($1, 'provider', 0, false)",
    )
    .bind(session)
    .execute(&mut *sweep)
    .await
    .expect("a mark");
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "Are you near?"}))
        .await;
    let delivered = provider.find("chat_message", Duration::from_secs(3)).await;
    sweep.rollback().await.expect("rolled back");
    let delivered = delivered.expect("the message arrives while the sweep's transaction is open");
    assert_eq!(delivered["message"], "Are you near?");
}

/// Posts `body` to the gateway's development receiver with these Standard Webhooks headers;
/// answers the status.
async fn post_to_dev_receiver(
    stack: &TestStack,
    webhook_id: &str,
    timestamp: i64,
    signature: &str,
    body: &str,
) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{}/dev/webhooks", stack.gateway))
        .header("content-type", "application/json")
        .header("webhook-id", webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .expect("the development receiver answers")
        .status()
        .as_u16()
}

/// What `GET /dev/notifications` lists for `user_id` in `role`.
async fn dev_notifications(stack: &TestStack, user_id: &str, role: Role) -> Vec<Value> {
    let reply = stack
        .http()
        .get("/dev/notifications", &stack.token(user_id, role))
        .await
        .expect_status(200);
    reply.body["notifications"]
        .as_array()
        .cloned()
        .expect("a notifications list")
}

/// The gateway's development receiver (`gateway/src/dev.rs`, what the web page's notifications
/// panel shows): the notify worker delivers to it, it verifies the signature with the shared
/// secret, refuses forgeries and stale requests, keeps each `webhook-id` once and lists an event
/// to its recipient only (a mediators' event to every mediator).
#[tokio::test]
async fn the_dev_receiver_verifies_and_lists_notifications_per_user() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat", "notify"])
            .without_rate_limits()
            .webhooks_to_dev_gateway()
            .env("WEBHOOK_SECRET", SECRET)
            .env("PRESENCE_GRACE_SECS", "1")
            .env("WEBHOOK_POLL_MS", "50"),
    )
    .await;

    // A real event, signed by notify, verified and kept by the gateway.
    let work_id = order(&stack, "seek1", "prov1").await;
    let deadline = Instant::now() + WITHIN;
    let listed = loop {
        let listed = dev_notifications(&stack, "prov1", Role::Provider).await;
        if !listed.is_empty() || Instant::now() >= deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed.len(), 1, "{listed:?}");
    let assigned = &listed[0];
    assert_eq!(assigned["type"], "work.assigned");
    assert_eq!(assigned["data"]["work_id"], work_id);
    assert_eq!(assigned["data"]["user_id"], "prov1");
    assert!(assigned["timestamp"].as_str().is_some(), "{assigned}");
    let webhook_id = assigned["webhook_id"].as_str().expect("webhook_id");
    assert!(webhook_id.starts_with("msg_"), "{assigned}");
    assert_eq!(
        outcome(&stack, webhook_id).await,
        (1, Some(String::from("delivered")))
    );
    // Only its recipient sees it: not the seeker of the order, not another provider.
    assert!(
        dev_notifications(&stack, "seek1", Role::Seeker)
            .await
            .is_empty()
    );
    assert!(
        dev_notifications(&stack, "prov2", Role::Provider)
            .await
            .is_empty()
    );
    assert!(
        dev_notifications(&stack, "prov1", Role::Seeker)
            .await
            .is_empty()
    );
    let anonymous = stack.http().get("/dev/notifications", "").await;
    assert_eq!(anonymous.status, 401);

    // Forgeries are refused: another secret's signature, no signature, a captured request
    // replayed six minutes later.
    let now = chrono::Utc::now().timestamp();
    let body = json!({"type": "work.assigned", "timestamp": "2025-01-01T00:00:00Z",
                      "data": {"user_id": "prov2", "role": "provider", "work_id": 7, "session_id": null}})
    .to_string();
    let other_secret = "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB";
    let forged = signature(other_secret, "msg_forged", now, body.as_bytes()).expect("signs");
    assert_eq!(
        post_to_dev_receiver(&stack, "msg_forged", now, &format!("v1,{forged}"), &body).await,
        401
    );
    assert_eq!(
        post_to_dev_receiver(&stack, "msg_forged", now, "", &body).await,
        401
    );
    let stale = now - 360;
    let old = signature(SECRET, "msg_stale", stale, body.as_bytes()).expect("signs");
    assert_eq!(
        post_to_dev_receiver(&stack, "msg_stale", stale, &format!("v1,{old}"), &body).await,
        401
    );
    assert!(
        dev_notifications(&stack, "prov2", Role::Provider)
            .await
            .is_empty()
    );

    // A genuine request is kept once, however often it is retried.
    let genuine = signature(SECRET, "msg_genuine", now, body.as_bytes()).expect("signs");
    for _ in 0..2 {
        assert_eq!(
            post_to_dev_receiver(&stack, "msg_genuine", now, &format!("v1,{genuine}"), &body).await,
            204
        );
    }
    let listed = dev_notifications(&stack, "prov2", Role::Provider).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["webhook_id"], "msg_genuine");
    assert_eq!(
        dev_notifications(&stack, "prov1", Role::Provider)
            .await
            .len(),
        1
    );

    // A mediators' event names no user: every mediator sees it.
    let dispute = json!({"type": "dispute.opened", "timestamp": "2025-01-01T00:00:00Z",
                         "data": {"user_id": null, "role": "mediator", "dispute_id": 1}})
    .to_string();
    let signed = signature(SECRET, "msg_dispute", now, dispute.as_bytes()).expect("signs");
    assert_eq!(
        post_to_dev_receiver(
            &stack,
            "msg_dispute",
            now,
            &format!("v1,{signed}"),
            &dispute
        )
        .await,
        204
    );
    for mediator in ["med1", "med2"] {
        let listed = dev_notifications(&stack, mediator, Role::Mediator).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["type"], "dispute.opened");
    }
}
