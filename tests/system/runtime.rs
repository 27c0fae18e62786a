//! The worker runtime's guarantees (contract sections 6 and 7): a frame that cannot be applied never
//! holds up what follows, nothing acknowledged is lost or applied twice, and a sender's messages
//! keep their order, through poison frames, database outages, killed workers and a NATS restart.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use system_tests::{Client, FIRST_SEQ, StackOptions, TestStack};

async fn say(client: &mut Client, session_id: &str, text: &str) -> Value {
    client
        .send(json!({"type": "chat_message", "session_id": session_id, "message": text}))
        .await;
    client.expect("message_sent").await
}

/// Makes every insert of a chat message with this text fail inside Postgres, as a bug or a broken
/// constraint would: the frame fails on every attempt for a reason that is not its content.
async fn make_text_fail(stack: &TestStack, text: &str) {
    let function = format!(
        "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
         BEGIN IF NEW.message_text = '{text}' THEN RAISE EXCEPTION 'poison for the test'; END IF;
         RETURN NEW; END $$ LANGUAGE plpgsql"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(function))
        .execute(&stack.pool)
        .await
        .expect("trigger function");
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON chat_messages
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
    )
    .execute(&stack.pool)
    .await
    .expect("trigger");
}

#[tokio::test]
async fn a_nul_in_a_chat_message_is_refused_at_once_and_the_next_message_goes_through() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle", "chat"])).await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let started = Instant::now();
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "bad\u{0}text", "client_message_id": "c1"}))
        .await;
    let error = seeker.expect("error").await;
    assert_eq!(error["error"], "message must not contain U+0000");
    assert_eq!(error["request_type"], "chat_message");
    assert_eq!(error["client_message_id"], "c1");
    let sent = say(&mut seeker, &session_id, "fine").await;
    assert_eq!(sent["seq"], FIRST_SEQ);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(provider.expect("chat_message").await["message"], "fine");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        1
    );
    assert!(stack.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_frame_that_does_not_parse_is_refused_without_parser_internals_and_holds_up_nothing() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle", "chat"])).await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    seeker
        .send_text(&format!(
            r#"{{"type":"chat_message","session_id":"{session_id}","message":1e400}}"#
        ))
        .await;
    let error = seeker.expect("error").await;
    let text = error["error"].as_str().expect("text");
    assert!(text.starts_with("invalid frame"), "{text}");
    assert!(!text.contains("line") && !text.contains("column"), "{text}");
    assert_eq!(error["request_type"], "chat_message");
    let started = Instant::now();
    assert_eq!(
        say(&mut seeker, &session_id, "next").await["seq"],
        FIRST_SEQ
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_frame_whose_handling_always_fails_is_dead_lettered_and_the_sender_moves_on() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .env("WORKER_MAX_DELIVER", "3")
            .env("WORKER_RETRY_BACKOFF_MS", "50"),
    )
    .await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    // A session in another partition, whose chat must not notice.
    let mut other = None;
    for index in 0..20 {
        let (mut seeker2, provider2, session2, _) = stack
            .session(&format!("oseek{index}"), &format!("oprov{index}"))
            .await;
        if shared::subjects::partition_of(&session2) != shared::subjects::partition_of(&session_id)
        {
            say(&mut seeker2, &session2, "warm").await;
            other = Some((seeker2, provider2, session2));
            break;
        }
    }
    let (mut other_seeker, _other_provider, other_session) = other.expect("another partition");
    make_text_fail(&stack, "poison").await;
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "poison"}))
        .await;
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "after"}))
        .await;
    // Meanwhile, another session's round trip is as quick as ever.
    let started = Instant::now();
    say(&mut other_seeker, &other_session, "unaffected").await;
    assert!(started.elapsed() < Duration::from_millis(500));

    let error = seeker.expect("error").await;
    assert_eq!(error["error"], "could not be processed");
    assert_eq!(error["request_type"], "chat_message");
    let sent = seeker.expect("message_sent").await;
    assert_eq!(sent["seq"], FIRST_SEQ, "the poison frame took no seq");
    let dead = stack.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "dead.chat");
    assert!(dead[0].1.contains("poison for the test"), "{}", dead[0].1);
    assert!(dead[0].2.contains("\"poison\""));
    let started = Instant::now();
    assert_eq!(
        say(&mut seeker, &session_id, "and on").await["seq"],
        FIRST_SEQ + 1
    );
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn postgres_unreachable_for_a_while_loses_nothing_and_dead_letters_nothing() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .through_database_proxy()
            .env("WORKER_MAX_DELIVER", "2")
            .env("WORKER_RETRY_BACKOFF_MS", "20"),
    )
    .await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    say(&mut seeker, &session_id, "before").await;
    let proxy = stack.database_proxy.as_ref().expect("proxy");
    proxy.cut();
    for index in 0..20 {
        seeker
            .send(json!({"type": "chat_message", "session_id": session_id, "message": format!("m{index}"), "client_message_id": format!("c{index}")}))
            .await;
    }
    // Many times the retry budget passes while the database is away.
    seeker
        .expect_no("message_sent", Duration::from_secs(3))
        .await;
    seeker.expect_no("error", Duration::from_millis(10)).await;
    proxy.restore();
    let mut seqs = Vec::new();
    for _ in 0..20 {
        let sent = seeker.find("message_sent", Duration::from_secs(15)).await;
        seqs.push(sent.expect("every message is confirmed after the outage")["seq"].as_i64());
    }
    assert_eq!(
        seqs,
        (FIRST_SEQ + 1..=FIRST_SEQ + 20)
            .map(Some)
            .collect::<Vec<_>>()
    );
    assert_eq!(provider.expect("chat_message").await["message"], "before");
    for index in 0..20 {
        assert_eq!(
            provider.expect("chat_message").await["message"],
            format!("m{index}")
        );
    }
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        21
    );
    assert!(stack.dead_letters().await.is_empty());
}

/// One sender of the chaos run: sends its messages one after another, each with a client id, and
/// sends one again (same id) when its `message_sent` does not come, as a phone on a bad network
/// does. Returns, per client id, every `message_sent` seen.
async fn send_patiently(
    mut seeker: Client,
    session_id: String,
    messages: usize,
) -> HashMap<String, Vec<Value>> {
    let mut confirmations: HashMap<String, Vec<Value>> = HashMap::new();
    for index in 0..messages {
        let client_id = format!("{session_id}-{index}");
        loop {
            seeker
                .send(json!({"type": "chat_message", "session_id": session_id, "message": format!("m{index}"), "client_message_id": client_id}))
                .await;
            let deadline = Instant::now() + Duration::from_secs(12);
            let mut confirmed = false;
            while Instant::now() < deadline {
                match seeker
                    .find("message_sent", Duration::from_millis(500))
                    .await
                {
                    Some(sent) => {
                        let id = sent["client_message_id"].as_str().unwrap_or("").to_owned();
                        let is_this = id == client_id;
                        confirmations.entry(id).or_default().push(sent);
                        if is_this {
                            confirmed = true;
                            break;
                        }
                    }
                    None => {
                        // A refusal ("temporarily unavailable" while NATS restarts) means: retry.
                        if seeker
                            .find("error", Duration::from_millis(1))
                            .await
                            .is_some()
                        {
                            break;
                        }
                    }
                }
            }
            if confirmed {
                break;
            }
        }
    }
    confirmations
}

#[tokio::test]
async fn chaos_killed_chat_and_lifecycle_workers_a_nats_restart_and_a_postgres_outage_lose_duplicate_and_reorder_nothing()
 {
    let sessions = 100;
    let messages = 100;
    // The providers only read at the end: keep their quiet sockets open meanwhile.
    let mut stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .through_database_proxy()
            .env("WS_IDLE_TIMEOUT_SECS", "600"),
    )
    .await;
    stack.start_worker("chat");
    stack.start_worker("chat");
    stack.start_worker("lifecycle");
    let setup = Instant::now();
    let (senders, receivers) = start_senders(&stack, "c", sessions, messages).await;
    eprintln!("{sessions} sessions set up in {:?}", setup.elapsed());
    // One chat instance SIGKILLed and replaced every 2 s for 20 s (a lifecycle instance every
    // other time), the nats-server restarted once along the way, and Postgres out of reach for
    // 3 s (every connection to it dropped); then the senders finish.
    let started = Instant::now();
    let (mut restarted_nats, mut database_cut) = (false, false);
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(20)
        && senders.iter().any(|sender| !sender.is_finished())
    {
        tokio::time::sleep(Duration::from_secs(2)).await;
        round += 1;
        stack.kill_one_worker("chat");
        stack.start_worker("chat");
        if round % 2 == 0 {
            stack.kill_one_worker("lifecycle");
            stack.start_worker("lifecycle");
        }
        if !restarted_nats {
            stack.restart_nats().await;
            restarted_nats = true;
        } else if !database_cut {
            let proxy = stack.database_proxy.as_ref().expect("proxy");
            proxy.cut();
            tokio::time::sleep(Duration::from_secs(3)).await;
            proxy.restore();
            database_cut = true;
        }
    }
    assert!(
        restarted_nats && database_cut,
        "the run outlasted the NATS restart and the Postgres outage"
    );
    eprintln!("chaos phase over after {:?}", started.elapsed());
    every_message_once_and_in_order(&stack, senders, receivers, messages, started).await;
}

#[tokio::test]
async fn on_a_three_node_nats_cluster_losing_the_inbound_leader_loses_duplicates_and_reorders_nothing()
 {
    let (sessions, messages) = (30, 100);
    let mut stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .nats_cluster(3)
            .env("WS_IDLE_TIMEOUT_SECS", "600"),
    )
    .await;
    stack.start_worker("chat");
    let (senders, receivers) = start_senders(&stack, "n", sessions, messages).await;
    // Under load, the node leading INBOUND dies without a word; a new leader takes over from the
    // replicas. Later the node comes back and catches up.
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = stack
        .nats_node_leading(shared::subjects::INBOUND_STREAM)
        .await;
    eprintln!("SIGKILL node{leader}, the INBOUND leader");
    stack.kill_nats_node(leader);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let new_leader = stack
        .nats_node_leading(shared::subjects::INBOUND_STREAM)
        .await;
    assert_ne!(new_leader, leader, "a surviving replica leads INBOUND");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.start_nats_node(leader).await;
    eprintln!("node{new_leader} took over; node{leader} is back after 6 s");
    every_message_once_and_in_order(&stack, senders, receivers, messages, started).await;
    // A process started without NATS_REPLICAS provisions with 1: it must not scale INBOUND down.
    let nats = stack.nats().await;
    shared::nats::provision_replicated(&nats, 1)
        .await
        .expect("provision");
    let context = async_nats::jetstream::new(nats);
    let mut inbound = context
        .get_stream(shared::subjects::INBOUND_STREAM)
        .await
        .expect("INBOUND");
    let info = inbound.info().await.expect("stream info");
    assert_eq!(info.config.num_replicas, 3, "INBOUND keeps its 3 replicas");
}

/// A chat run: `sessions` pairs whose seekers each send `messages` numbered messages with
/// `client_message_id`s, patiently (`send_patiently`); the senders, and each provider with its
/// session.
async fn start_senders(
    stack: &TestStack,
    prefix: &str,
    sessions: usize,
    messages: usize,
) -> (
    Vec<tokio::task::JoinHandle<HashMap<String, Vec<Value>>>>,
    Vec<(Client, String)>,
) {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for index in 0..sessions {
        let (seeker, provider, session_id, _) = stack
            .session(&format!("{prefix}s{index}"), &format!("{prefix}p{index}"))
            .await;
        senders.push(tokio::spawn(send_patiently(
            seeker,
            session_id.clone(),
            messages,
        )));
        receivers.push((provider, session_id));
    }
    (senders, receivers)
}

/// Waits for the senders of a chat run under faults, then checks what the contract promises:
/// every message confirmed with one id and seq, stored once, each sender's seqs in send order,
/// nothing dead-lettered, and each recipient sees each message once, in order, and all of them
/// on resume.
async fn every_message_once_and_in_order(
    stack: &TestStack,
    senders: Vec<tokio::task::JoinHandle<HashMap<String, Vec<Value>>>>,
    receivers: Vec<(Client, String)>,
    messages: usize,
    started: Instant,
) {
    let sessions = receivers.len();
    while senders.iter().any(|sender| !sender.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "the senders did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("senders done after {:?}", started.elapsed());
    let mut confirmed = 0;
    for sender in senders {
        for (client_id, sent) in sender.await.expect("sender") {
            let first = &sent[0];
            for again in &sent {
                assert_eq!(again["message_id"], first["message_id"], "{client_id}");
                assert_eq!(again["seq"], first["seq"], "{client_id}");
            }
            confirmed += 1;
        }
    }
    assert_eq!(confirmed, sessions * messages);
    let stored = stack
        .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
        .await;
    assert_eq!(
        stored,
        (sessions * messages) as i64,
        "each message stored once"
    );
    let out_of_order = stack
        .count(
            // The session's start took seq 1 (its system message).
            "SELECT count(*) FROM chat_messages
             WHERE kind <> 'system' AND substring(message_text from 2)::int + 2 <> seq",
        )
        .await;
    assert_eq!(out_of_order, 0, "every sender's seqs follow its send order");
    assert!(
        stack.dead_letters().await.is_empty(),
        "an outage dead-letters nothing"
    );
    let mut checks = Vec::new();
    for (mut provider, session_id) in receivers {
        checks.push(tokio::spawn(async move {
            // New messages arrive in order. When nats-server itself is killed it may have
            // delivered a batch's events but lost its acks; the batch then comes back and its
            // events are sent again: the same message_id and seq, which clients drop (contract
            // section 7). `resume` brings whatever was lost in flight.
            let mut seen = HashMap::new();
            let mut last_seq = 0;
            while let Some(message) = provider
                .find("chat_message", Duration::from_millis(300))
                .await
            {
                let seq = message["seq"].as_i64().expect("seq");
                let message_id = message["message_id"].to_string();
                match seen.get(&message_id) {
                    Some(first_seq) => assert_eq!(*first_seq, seq, "a repeat is the same message"),
                    None => {
                        assert!(seq > last_seq, "in order");
                        seen.insert(message_id, seq);
                        last_seq = seq;
                    }
                }
            }
            provider
                .send(json!({"type": "resume", "session_id": session_id, "last_seq": 0}))
                .await;
            // Partitions may still be changing hands after the last kill: give it time.
            provider
                .find("session_state", Duration::from_secs(30))
                .await
                .expect("session_state");
            let mut replayed = 0;
            while provider
                .find("chat_message", Duration::from_millis(500))
                .await
                .is_some()
            {
                replayed += 1;
            }
            assert_eq!(replayed, messages, "{session_id}");
        }));
    }
    for check in checks {
        check.await.expect("recipient check");
    }
}

#[tokio::test]
async fn a_full_inbound_stream_answers_server_busy_and_keeps_what_it_accepted() {
    let mut stack = TestStack::with(StackOptions::default().only(&["lifecycle", "chat"])).await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    stack.kill_workers("chat");
    // Shrink the stream so that a few frames fill it (nothing is deleted to make room).
    let context = async_nats::jetstream::new(stack.nats().await);
    let mut stream = context
        .get_stream(shared::subjects::INBOUND_STREAM)
        .await
        .expect("INBOUND");
    let mut config = stream.info().await.expect("stream info").config.clone();
    config.max_bytes = 16 * 1024;
    context.update_stream(config).await.expect("smaller stream");
    let mut accepted = 0;
    let mut busy = None;
    for index in 0..200 {
        seeker
            .send(json!({"type": "chat_message", "session_id": session_id, "message": format!("{index:0>200}")}))
            .await;
        if let Some(error) = seeker.find("error", Duration::from_millis(100)).await {
            busy = Some(error);
            break;
        }
        accepted += 1;
    }
    let busy = busy.expect("the stream filled up");
    assert_eq!(busy["error"], "server busy, please retry");
    assert_eq!(busy["request_type"], "chat_message");
    assert!(accepted > 0);
    stack.start_worker("chat");
    for _ in 0..accepted {
        assert!(
            seeker
                .find("message_sent", Duration::from_secs(15))
                .await
                .is_some(),
            "every frame accepted before the stream was full is handled"
        );
    }
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        accepted as i64
    );
}

#[tokio::test]
async fn a_worker_serves_its_metrics_at_metrics_addr() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut worker = std::process::Command::new(system_tests::stack::binary("mediums"))
        .env(
            "NATS_URL",
            stack.nats_url_as(system_tests::NatsUser::Worker),
        )
        .env("DATABASE_URL", &stack.database_url)
        .env("METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mediums starts");
    let mut seen = String::new();
    for _ in 0..100 {
        if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            seen = answer.text().await.unwrap_or_default();
            if seen.contains("worker_up") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(
        seen.contains("worker_up{worker=\"mediums\"} 1"),
        "no worker_up in: {seen}"
    );
}

#[tokio::test]
async fn a_rolling_restart_of_every_gateway_and_worker_under_chat_load_loses_nothing() {
    // Two gateways and two instances of every worker kind, each restarted in turn (SIGTERM, wait,
    // start) while clients that follow the contract chat across them (reconnect, resend without
    // `message_sent`, `resume`).
    let mut workers = Vec::new();
    for kind in system_tests::stack::WORKER_KINDS {
        workers.extend([kind, kind]);
    }
    let mut stack =
        TestStack::with(StackOptions::default().only(&workers).without_rate_limits()).await;
    let mut extra = vec![stack.extra_gateway(&stack.nats_address()).await];
    let gateways = vec![stack.gateway.clone(), extra[0].address.clone()];
    let pairs = 10;
    let chat =
        system_tests::resilient::ResilientChat::start(&stack, gateways, "", pairs, 100).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let steps = stack
        .rolling_restart(&mut extra, Duration::from_millis(700), || chat.now())
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcome = chat.finish(Duration::from_secs(30)).await;

    assert_eq!(
        steps.len(),
        2 + 2 * system_tests::stack::WORKER_KINDS.len(),
        "2 gateways and two instances of every worker kind restarted"
    );
    for step in &steps {
        assert!(step.exited, "{} exited on SIGTERM", step.what);
        // A process that ignores SIGTERM is stopped only by its 10 s grace.
        assert!(
            step.seconds < 5.0,
            "{} exited promptly on SIGTERM ({:.2} s)",
            step.what,
            step.seconds
        );
    }
    assert!(
        outcome.reconnects >= pairs as u64 * 2,
        "every socket was closed by a gateway restart at least once ({} reconnects)",
        outcome.reconnects
    );
    assert!(outcome.sent > 1000, "the load ran: {} sent", outcome.sent);
    assert_eq!(
        outcome.lost, 0,
        "every message sent was shown to the provider"
    );
    assert_eq!(
        outcome.unconfirmed, 0,
        "every message sent got its message_sent"
    );
    assert_eq!(
        stack.stored_client_messages().await,
        outcome.sent as i64,
        "every message stored once"
    );
    assert_eq!(
        stack.stored_out_of_order().await,
        0,
        "each sender's messages stored in the order sent"
    );
}
