//! What an operator does, and what the infrastructure does to us (contract section 12,
//! "Operators"): a recreated `INBOUND`, a database that turns read-only or times out, floods of
//! REST calls and connection notices, a partition task that panics, a worker SIGKILLed, and the
//! way back from a dead letter. Nothing is lost, applied twice or dead-lettered for any of them.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use system_tests::{Client, FIRST_SEQ, StackOptions, TestStack};

/// Sends a chat message with a client id until it is confirmed (a refusal while the
/// infrastructure is away means "retry", as a phone does); its `message_sent`.
async fn send_until_confirmed(
    client: &mut Client,
    session_id: &str,
    text: &str,
    client_message_id: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        assert!(
            Instant::now() < deadline,
            "{client_message_id} was not confirmed within {within:?}"
        );
        client
            .send(json!({"type": "chat_message", "session_id": session_id, "message": text, "client_message_id": client_message_id}))
            .await;
        let wait_until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < wait_until {
            match client
                .find_any(&["message_sent", "error"], Duration::from_millis(200))
                .await
            {
                Some(frame)
                    if frame["type"] == "message_sent"
                        && frame["client_message_id"] == client_message_id =>
                {
                    return frame;
                }
                Some(frame) if frame["type"] == "message_sent" => {}
                Some(_) => break,
                None => {}
            }
        }
    }
}

/// The chat messages (not system messages) stored in a session, in seq order.
async fn stored_texts(stack: &TestStack, session_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT message_text FROM chat_messages
         WHERE session_id = $1::uuid AND kind <> 'system' ORDER BY seq",
    )
    .bind(session_id)
    .fetch_all(&stack.pool)
    .await
    .expect("stored messages")
}

#[tokio::test]
async fn a_recreated_inbound_stream_applies_every_frame_sent_afterwards() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle", "chat"])).await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    // Enough traffic that the partition's cursor stands well past where a new stream starts.
    for index in 0..30 {
        send_until_confirmed(
            &mut seeker,
            &session_id,
            &format!("old{index}"),
            &format!("old{index}"),
            Duration::from_secs(10),
        )
        .await;
    }
    for _ in 0..30 {
        provider.expect("chat_message").await;
    }
    let context = async_nats::jetstream::new(stack.nats().await);
    context
        .delete_stream(shared::subjects::INBOUND_STREAM)
        .await
        .expect("INBOUND deleted, as `nats stream rm INBOUND` does");
    // The workers find it missing and make it again (as they do at start).
    let deadline = Instant::now() + Duration::from_secs(15);
    while context
        .get_stream(shared::subjects::INBOUND_STREAM)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nobody made INBOUND again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seqs = Vec::new();
    for index in 0..20 {
        let sent = send_until_confirmed(
            &mut seeker,
            &session_id,
            &format!("new{index}"),
            &format!("new{index}"),
            Duration::from_secs(20),
        )
        .await;
        seqs.push(sent["seq"].as_i64().expect("seq"));
    }
    assert_eq!(
        seqs,
        (FIRST_SEQ + 30..FIRST_SEQ + 50).collect::<Vec<_>>(),
        "every message sent after the stream was made again is applied, in order"
    );
    for index in 0..20 {
        assert_eq!(
            provider
                .find("chat_message", Duration::from_secs(5))
                .await
                .expect("delivered")["message"],
            format!("new{index}")
        );
    }
    // A resend (same client id) after it is answered with the stored message, not stored again.
    let again = send_until_confirmed(
        &mut seeker,
        &session_id,
        "new5",
        "new5",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(again["seq"], FIRST_SEQ + 35);
    assert_eq!(stored_texts(&stack, &session_id).await.len(), 50);
    // The lifecycle worker applies what is new too: a new work order is accepted.
    let (_seeker2, _provider2, second_session, _) = stack.session("seek2", "prov2").await;
    assert!(!second_session.is_empty());
    assert!(stack.dead_letters().await.is_empty());
}

/// Runs `sql` on the test database as the operator would (autocommit, on the test's pool).
async fn operator(stack: &TestStack, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&stack.pool)
        .await
        .expect("operator statement");
}

/// Ends every other session on the test database (the workers reconnect), as a failover does.
async fn drop_connections(stack: &TestStack) {
    operator(
        stack,
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            stack.database_name()
        ),
    )
    .await;
}

/// Sends `count` messages (client ids `<prefix><n>`) without waiting for confirmations.
async fn send_many(client: &mut Client, session_id: &str, prefix: &str, count: usize) {
    for index in 0..count {
        client
            .send(json!({"type": "chat_message", "session_id": session_id, "message": format!("{prefix}{index}"), "client_message_id": format!("{prefix}{index}")}))
            .await;
    }
}

/// Every one of `count` messages `<prefix><n>` is confirmed (in order) and stored once.
async fn every_message_applied_once_in_order(
    stack: &TestStack,
    seeker: &mut Client,
    session_id: &str,
    prefix: &str,
    count: usize,
) {
    let mut confirmed = Vec::new();
    while confirmed.len() < count {
        let sent = seeker
            .find("message_sent", Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("only {} of {count} confirmed", confirmed.len()));
        confirmed.push(sent["client_message_id"].as_str().unwrap_or("").to_owned());
    }
    let wanted: Vec<String> = (0..count).map(|index| format!("{prefix}{index}")).collect();
    assert_eq!(confirmed, wanted, "confirmed in the order sent");
    let stored: Vec<String> = stored_texts(stack, session_id)
        .await
        .into_iter()
        .filter(|text| text.starts_with(prefix))
        .collect();
    assert_eq!(stored, wanted, "stored once each, in the order sent");
    assert!(
        stack.dead_letters().await.is_empty(),
        "an outage dead-letters nothing"
    );
}

#[tokio::test]
async fn a_database_made_read_only_pauses_processing_and_dead_letters_nothing() {
    // A retry budget that a frame failing for its own sake would spend within a second.
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .env("WORKER_MAX_DELIVER", "2")
            .env("WORKER_RETRY_BACKOFF_MS", "20"),
    )
    .await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    send_until_confirmed(
        &mut seeker,
        &session_id,
        "before",
        "b",
        Duration::from_secs(5),
    )
    .await;
    let name = stack.database_name();
    // As after a failover to a node that is not yet the primary.
    operator(
        &stack,
        format!("ALTER DATABASE {name} SET default_transaction_read_only = on"),
    )
    .await;
    drop_connections(&stack).await;
    send_many(&mut seeker, &session_id, "ro", 10).await;
    seeker
        .expect_no("message_sent", Duration::from_secs(8))
        .await;
    seeker.expect_no("error", Duration::from_millis(10)).await;
    operator(
        &stack,
        // The operator's own session is read-only too by now.
        format!(
            "BEGIN READ WRITE; ALTER DATABASE {name} SET default_transaction_read_only = off; COMMIT"
        ),
    )
    .await;
    drop_connections(&stack).await;
    every_message_applied_once_in_order(&stack, &mut seeker, &session_id, "ro", 10).await;
    assert!(
        !stack
            .log_lines_containing("the database takes no writes; pausing")
            .is_empty(),
        "the pause is in the workers' logs"
    );
}

#[tokio::test]
async fn statement_timeouts_pause_processing_and_dead_letter_nothing() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .env("WORKER_MAX_DELIVER", "2")
            .env("WORKER_RETRY_BACKOFF_MS", "20"),
    )
    .await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    send_until_confirmed(
        &mut seeker,
        &session_id,
        "before",
        "b",
        Duration::from_secs(5),
    )
    .await;
    let name = stack.database_name();
    operator(
        &stack,
        format!("ALTER DATABASE {name} SET statement_timeout = '300ms'"),
    )
    .await;
    drop_connections(&stack).await;
    // A long maintenance transaction holds the messages table: every insert times out.
    let mut maintenance = stack.pool.begin().await.expect("maintenance transaction");
    sqlx::query("LOCK TABLE chat_messages IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *maintenance)
        .await
        .expect("lock");
    send_many(&mut seeker, &session_id, "st", 10).await;
    seeker
        .expect_no("message_sent", Duration::from_secs(6))
        .await;
    seeker.expect_no("error", Duration::from_millis(10)).await;
    maintenance.rollback().await.expect("maintenance ends");
    operator(
        &stack,
        format!("ALTER DATABASE {name} RESET statement_timeout"),
    )
    .await;
    every_message_applied_once_in_order(&stack, &mut seeker, &session_id, "st", 10).await;
}

#[tokio::test]
async fn rest_floods_and_a_connect_notice_herd_never_stall_chat() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .env("WS_IDLE_TIMEOUT_SECS", "600"),
    )
    .await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    send_until_confirmed(
        &mut seeker,
        &session_id,
        "warm",
        "w",
        Duration::from_secs(5),
    )
    .await;
    provider.expect("chat_message").await;
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // One user's script: as many REST calls as 16 connections carry (the gateway's limit answers
    // most of them 429 without asking a worker).
    let flooder_token = stack.token("flooder", shared::auth::Role::Seeker);
    let mut floods = Vec::new();
    for _ in 0..16 {
        let (http, token, stopping) = (stack.http(), flooder_token.clone(), stopping.clone());
        floods.push(tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let reply = http.get("/api/conversations", &token).await;
                *statuses.entry(reply.status).or_default() += 1;
            }
            statuses
        }));
    }
    // 20,000 connect notices at once, as gateways send after a NATS restart.
    let nats = stack.nats().await;
    for index in 0..20_000 {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(shared::headers::USER_ID, format!("herd{index}").as_str());
        headers.insert(shared::headers::ROLE, "seeker");
        headers.insert(shared::headers::CONN_ID, format!("c{index}").as_str());
        nats.publish_with_headers(
            format!("user.herd{index}.connected"),
            headers,
            bytes::Bytes::new(),
        )
        .await
        .expect("notice");
    }
    nats.flush().await.expect("notices out");
    // Meanwhile the pair chats at 5 messages a second.
    let mut delays = Vec::new();
    for index in 0..40 {
        let started = Instant::now();
        seeker
            .send(json!({"type": "chat_message", "session_id": session_id, "message": format!("m{index}"), "client_message_id": format!("m{index}")}))
            .await;
        let delivered = provider
            .find("chat_message", Duration::from_secs(10))
            .await
            .expect("the pair's messages keep arriving");
        assert_eq!(delivered["message"], format!("m{index}"));
        delays.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for flood in floods {
        for (status, count) in flood.await.expect("flood") {
            *statuses.entry(status).or_default() += count;
        }
    }
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[delays.len() * 99 / 100];
    let calls: u64 = statuses.values().sum();
    eprintln!("REST answers {statuses:?} ({calls} calls); chat p50 {p50:?} p99 {p99:?}");
    assert!(
        statuses
            .keys()
            .all(|status| [200, 429, 503].contains(status)),
        "REST answers 200, 429 or 503: {statuses:?}"
    );
    assert!(
        statuses.get(&429).copied().unwrap_or(0) > 0,
        "the flood met the limit"
    );
    assert!(p99 < Duration::from_secs(2), "chat p99 {p99:?}");
    assert!(
        stack
            .log_lines_containing("the database takes no writes; pausing")
            .is_empty(),
        "no partition paused"
    );
}

#[tokio::test]
async fn a_partition_task_that_panics_is_serving_again_within_seconds() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .env("WORKER_TEST_PANIC_ON", "panic-here"),
    )
    .await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let started = Instant::now();
    let sent = send_until_confirmed(
        &mut seeker,
        &session_id,
        "panic-here",
        "p1",
        Duration::from_secs(10),
    )
    .await;
    let recovered = started.elapsed();
    eprintln!("served again after {recovered:?}");
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
    assert_eq!(sent["seq"], FIRST_SEQ);
    assert_eq!(
        provider.expect("chat_message").await["message"],
        "panic-here"
    );
    let next = send_until_confirmed(
        &mut seeker,
        &session_id,
        "next",
        "p2",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(next["seq"], FIRST_SEQ + 1);
    assert_eq!(
        stack
            .log_lines_containing("ended on its own; starting it again")
            .len(),
        1,
        "the panic happened, once, and the task was started again"
    );
    assert!(stack.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_sigkilled_workers_partitions_are_served_again_within_two_seconds() {
    let mut stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .env("WS_IDLE_TIMEOUT_SECS", "600"),
    )
    .await;
    stack.start_worker("chat");
    // Sessions in every partition, so the killed instance owned some of them.
    let mut sessions = Vec::new();
    let mut partitions = std::collections::BTreeSet::new();
    let mut index = 0;
    while partitions.len() < shared::subjects::PARTITIONS as usize {
        let (mut seeker, provider, session_id, _) = stack
            .session(&format!("ks{index}"), &format!("kp{index}"))
            .await;
        index += 1;
        if partitions.insert(shared::subjects::partition_of(&session_id)) {
            send_until_confirmed(
                &mut seeker,
                &session_id,
                "warm",
                "w",
                Duration::from_secs(10),
            )
            .await;
            sessions.push((seeker, provider, session_id));
        }
    }
    // Both instances hold partitions by now (membership settles within a heartbeat).
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.kill_one_worker("chat");
    let killed = Instant::now();
    let mut waits = Vec::new();
    for (seeker, _, session_id) in &mut sessions {
        seeker
            .send(json!({"type": "chat_message", "session_id": session_id, "message": "after", "client_message_id": "after"}))
            .await;
    }
    for (seeker, _, _) in &mut sessions {
        seeker
            .find("message_sent", Duration::from_secs(10))
            .await
            .expect("confirmed");
        waits.push(killed.elapsed());
    }
    let slowest = waits.iter().max().copied().unwrap_or_default();
    eprintln!("every partition served again {slowest:?} after the SIGKILL");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    assert!(stack.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_dead_lettered_frame_is_replayed_once_by_the_operator() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .env("WORKER_MAX_DELIVER", "2")
            .env("WORKER_RETRY_BACKOFF_MS", "20"),
    )
    .await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    // A bug (here a trigger) refuses this one message on every attempt.
    operator(
        &stack,
        String::from(
            "CREATE FUNCTION refuse_bug() RETURNS trigger AS $$
             BEGIN IF NEW.message_text = 'hit the bug' THEN RAISE EXCEPTION 'a bug'; END IF;
             RETURN NEW; END $$ LANGUAGE plpgsql;
             CREATE TRIGGER refuse_bug BEFORE INSERT ON chat_messages
             FOR EACH ROW EXECUTE FUNCTION refuse_bug()",
        ),
    )
    .await;
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "hit the bug", "client_message_id": "bug"}))
        .await;
    assert_eq!(
        seeker.expect("error").await["error"],
        "could not be processed"
    );
    assert_eq!(stack.dead_letters().await.len(), 1);
    let replay = |arguments: &[&str]| {
        let output = std::process::Command::new(system_tests::stack::binary("replay"))
            .args(arguments)
            .env("NATS_URL", stack.nats_url())
            .output()
            .expect("replay runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listed = replay(&["list", "--kind", "chat"]);
    assert!(listed.contains("a bug"), "{listed}");
    assert!(listed.contains("1 x chat"), "{listed}");
    // The operator fixes the bug, then puts the frame back.
    operator(
        &stack,
        String::from("DROP TRIGGER refuse_bug ON chat_messages"),
    )
    .await;
    let sent = replay(&["send", "--all", "--kind", "chat"]);
    assert!(sent.contains("1 frame(s) put back"), "{sent}");
    let confirmed = seeker.expect("message_sent").await;
    assert_eq!(confirmed["client_message_id"], "bug");
    assert_eq!(
        provider.expect("chat_message").await["message"],
        "hit the bug"
    );
    // A second replay finds nothing to do; the message is stored once.
    let again = replay(&["send", "--all"]);
    assert!(again.contains("0 frame(s) put back"), "{again}");
    assert!(stack.dead_letters().await.is_empty());
    assert_eq!(stored_texts(&stack, &session_id).await, vec!["hit the bug"]);
}
