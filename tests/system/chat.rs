//! Anonymous chat (contract section 4 "Chat", "Receipts", "Typing", "Resume"; section 6).

use serde_json::{Value, json};
use shared::auth::Role;
use std::collections::HashSet;
use std::time::Duration;
use system_tests::{Client, FIRST_SEQ, StackOptions, TestStack};

async fn stack() -> TestStack {
    TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            // These tests send faster than a phone (fifty messages at once); limits are tested
            // in limits.rs.
            .without_rate_limits()
            .env("TYPING_TTL_SECS", "1"),
    )
    .await
}

async fn say(client: &mut Client, session_id: &str, text: &str) -> Value {
    client
        .send(json!({"type": "chat_message", "session_id": session_id, "message": text}))
        .await;
    client.expect("message_sent").await
}

#[tokio::test]
async fn start_chat_tells_both_parties_the_room_is_ready() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider
        .send(json!({"type": "start_chat", "session_id": session_id}))
        .await;
    for client in [&mut seeker, &mut provider] {
        let ready = client.expect("chat_ready").await;
        assert_eq!(ready["chat_room_id"], session_id.as_str());
        assert_eq!(ready["message"], "Chat started successfully");
    }
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert!(snapshot.body["chat_started_at"].is_string());
}

#[tokio::test]
async fn a_message_is_stored_then_confirmed_and_delivered_to_the_other_party() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    seeker.send(json!({"type": "chat_message", "session_id": session_id, "message": "When will you arrive?"})).await;
    // Before start_chat, a message starts the chat: both get chat_ready first.
    seeker.expect("chat_ready").await;
    provider.expect("chat_ready").await;
    let sent = seeker.expect("message_sent").await;
    assert_eq!(sent["seq"], FIRST_SEQ);
    assert_eq!(sent["session_id"], session_id.as_str());
    let received = provider.expect("chat_message").await;
    assert_eq!(received["message_id"], sent["message_id"]);
    assert_eq!(received["sender_type"], "seeker");
    assert_eq!(received["message"], "When will you arrive?");
    assert_eq!(received["seq"], FIRST_SEQ);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        1
    );
    seeker
        .expect_no("chat_message", Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn fifty_rapid_messages_arrive_in_order() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    for index in 1..=50 {
        seeker.send(json!({"type": "chat_message", "session_id": session_id, "message": format!("m{index}")})).await;
    }
    for index in 1..=50 {
        let received = provider.expect("chat_message").await;
        assert_eq!(received["seq"], FIRST_SEQ - 1 + index);
        assert_eq!(received["message"], format!("m{index}"));
        assert_eq!(
            seeker.expect("message_sent").await["seq"],
            FIRST_SEQ - 1 + index
        );
    }
}

#[tokio::test]
async fn two_chat_instances_keep_each_senders_order() {
    let mut stack = stack().await;
    stack.start_worker("chat");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    for index in 1..=100 {
        seeker.send(json!({"type": "chat_message", "session_id": session_id, "message": format!("s{index}")})).await;
        provider.send(json!({"type": "chat_message", "session_id": session_id, "message": format!("p{index}")})).await;
    }
    let (mut last_seeker, mut last_provider) = (0, 0);
    for _ in 0..100 {
        let from_seeker = provider.expect("chat_message").await;
        let number: i64 = from_seeker["message"].as_str().expect("text")[1..]
            .parse()
            .expect("number");
        assert_eq!(number, last_seeker + 1, "seeker's messages in order");
        last_seeker = number;
        let from_provider = seeker.expect("chat_message").await;
        let number: i64 = from_provider["message"].as_str().expect("text")[1..]
            .parse()
            .expect("number");
        assert_eq!(number, last_provider + 1, "provider's messages in order");
        last_provider = number;
    }
    let seqs: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM chat_messages WHERE sender_type = 'seeker' ORDER BY created_at, seq",
    )
    .fetch_all(&stack.pool)
    .await
    .expect("seqs");
    assert!(
        seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "seq increases in send order"
    );
    assert_eq!(
        stack
            .count("SELECT count(DISTINCT seq) FROM chat_messages WHERE kind <> 'system'")
            .await,
        200
    );
}

#[tokio::test]
async fn a_resend_with_the_same_client_message_id_returns_the_same_message() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let frame = json!({"type": "chat_message", "session_id": session_id, "message": "once", "client_message_id": "c-1"});
    seeker.send(frame.clone()).await;
    let first = seeker.expect("message_sent").await;
    assert_eq!(first["client_message_id"], "c-1");
    seeker.send(frame).await;
    let second = seeker.expect("message_sent").await;
    assert_eq!(second["message_id"], first["message_id"]);
    assert_eq!(second["seq"], first["seq"]);
    assert_eq!(second["client_message_id"], "c-1");
    provider.expect("chat_message").await;
    provider
        .expect_no("chat_message", Duration::from_millis(300))
        .await;
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        1
    );
}

#[tokio::test]
async fn invalid_messages_are_refused_and_store_nothing() {
    let stack = stack().await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    let cases = [
        json!({"message": ""}),
        json!({"message": "   "}),
        json!({}),
        json!({"message": "é".repeat(4001)}),
        json!({"message": 42}),
        json!({"message": "ok", "client_message_id": "x".repeat(65)}),
    ];
    for extra in cases {
        let mut frame = json!({"type": "chat_message", "session_id": session_id});
        if let (Some(frame), Some(extra)) = (frame.as_object_mut(), extra.as_object()) {
            frame.extend(extra.clone());
        }
        seeker.send(frame).await;
        let error = seeker.expect("error").await;
        assert_eq!(error["request_type"], "chat_message");
    }
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "", "client_message_id": "c-9"}))
        .await;
    assert_eq!(
        seeker.expect("error").await["client_message_id"],
        "c-9",
        "the refused message is named"
    );
    let longest = say(&mut seeker, &session_id, &"é".repeat(4000)).await;
    assert_eq!(longest["seq"], FIRST_SEQ);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        1
    );
}

#[tokio::test]
async fn receipts_move_forward_only_and_only_the_recipient_sends_them() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let sent = say(&mut seeker, &session_id, "hello").await;
    let message_id = sent["message_id"].clone();
    provider.expect("chat_message").await;
    // The sender cannot mark their own message.
    seeker
        .send(json!({"type": "message_read", "message_id": message_id}))
        .await;
    assert_eq!(seeker.expect_error().await, "message not found");
    provider
        .send(json!({"type": "message_delivered", "message_id": message_id}))
        .await;
    let update = seeker.expect("message_status_update").await;
    assert_eq!(update["status"], "delivered");
    assert_eq!(update["message_id"], message_id);
    provider.send(json!({"type": "message_delivered", "message_id": message_id, "session_id": session_id})).await;
    provider
        .send(json!({"type": "message_read", "message_id": message_id}))
        .await;
    assert_eq!(
        seeker.expect("message_status_update").await["status"],
        "read"
    );
    provider
        .send(json!({"type": "message_delivered", "message_id": message_id}))
        .await;
    provider
        .send(json!({"type": "message_read", "message_id": message_id}))
        .await;
    seeker
        .expect_no("message_status_update", Duration::from_millis(500))
        .await;
    // Read before delivered is one update, straight to read.
    let second = say(&mut seeker, &session_id, "again").await;
    provider
        .send(json!({"type": "message_read", "message_id": second["message_id"]}))
        .await;
    assert_eq!(
        seeker.expect("message_status_update").await["status"],
        "read"
    );
    seeker
        .expect_no("message_status_update", Duration::from_millis(300))
        .await;
    let history = stack
        .http()
        .get(
            &format!("/api/sessions/{session_id}/messages"),
            &stack.token("seek1", Role::Seeker),
        )
        .await
        .expect_status(200);
    assert_eq!(history.body["messages"][0]["delivery_status"], "read");
    // A receipt naming the wrong session does not find the message.
    provider
        .send(json!({"type": "message_read", "message_id": message_id, "session_id": uuid::Uuid::new_v4()}))
        .await;
    assert_eq!(provider.expect_error().await, "message not found");
}

#[tokio::test]
async fn typing_reaches_the_other_party_and_clears_itself() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    seeker
        .send(json!({"type": "typing_indicator", "session_id": session_id, "is_typing": true}))
        .await;
    let typing = provider.expect("typing_indicator").await;
    assert_eq!(typing["is_typing"], true);
    assert_eq!(typing["user_type"], "seeker");
    let started = std::time::Instant::now();
    let cleared = provider.expect("typing_indicator").await;
    assert_eq!(cleared["is_typing"], false);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "cleared after TYPING_TTL_SECS"
    );
    seeker
        .expect_no("typing_indicator", Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn refreshing_typing_keeps_it_on_and_a_message_clears_it() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    for _ in 0..3 {
        provider
            .send(json!({"type": "typing_indicator", "session_id": session_id, "is_typing": true}))
            .await;
        assert_eq!(seeker.expect("typing_indicator").await["is_typing"], true);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    say(&mut provider, &session_id, "on my way").await;
    let cleared = seeker.expect("typing_indicator").await;
    assert_eq!(cleared["is_typing"], false);
    seeker.expect("chat_message").await;
    seeker
        .expect_no("typing_indicator", Duration::from_millis(1500))
        .await;
    provider
        .send(json!({"type": "typing_indicator", "session_id": session_id, "is_typing": "yes"}))
        .await;
    assert_eq!(
        provider.expect_error().await,
        "is_typing must be true or false"
    );
}

#[tokio::test]
async fn resume_delivers_exactly_the_missed_messages_in_order() {
    let stack = stack().await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    say(&mut seeker, &session_id, "one").await;
    provider.close().await;
    for text in ["two", "three", "four"] {
        say(&mut seeker, &session_id, text).await;
    }
    let mut provider = stack.connect("prov1", Role::Provider).await;
    // Connecting alone re-sends what was never marked delivered (contract section 7).
    for seq in FIRST_SEQ..FIRST_SEQ + 4 {
        assert_eq!(provider.expect("chat_message").await["seq"], seq);
    }
    provider
        .send(json!({"type": "resume", "session_id": session_id, "last_seq": FIRST_SEQ}))
        .await;
    let state = provider.expect("session_state").await;
    assert_eq!(state["session_id"], session_id.as_str());
    assert_eq!(state["connection_state"], "waiting");
    assert!(state.get("rating_stars").is_none());
    for (seq, text) in [(1, "two"), (2, "three"), (3, "four")] {
        let message = provider.expect("chat_message").await;
        assert_eq!(message["seq"], FIRST_SEQ + seq);
        assert_eq!(message["message"], text);
    }
    provider
        .expect_no("chat_message", Duration::from_millis(300))
        .await;
    let unclaimed = provider.unclaimed().len();
    assert_eq!(unclaimed, 0, "{:?}", provider.unclaimed());
}

#[tokio::test]
async fn history_pages_backwards_with_limit_before_and_has_more() {
    let stack = stack().await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    for index in 1..=7 {
        say(&mut seeker, &session_id, &format!("m{index}")).await;
    }
    let http = stack.http();
    let token = stack.token("prov1", Role::Provider);
    let page = http
        .get(
            &format!("/api/sessions/{session_id}/messages?limit=3"),
            &token,
        )
        .await
        .expect_status(200);
    let seqs: Vec<i64> = page.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    // Seq 1 is the system message of the session's start; m1..m7 are 2..8.
    assert_eq!(seqs, vec![6, 7, 8]);
    assert_eq!(page.body["has_more"], true);
    assert_eq!(page.body["messages"][0]["sender_type"], "seeker");
    let page = http
        .get(
            &format!("/api/sessions/{session_id}/messages?limit=3&before=6"),
            &token,
        )
        .await
        .expect_status(200);
    let seqs: Vec<i64> = page.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![3, 4, 5]);
    assert_eq!(page.body["has_more"], true);
    let page = http
        .get(
            &format!("/api/sessions/{session_id}/messages?before=2"),
            &token,
        )
        .await
        .expect_status(200);
    assert_eq!(page.body["messages"].as_array().expect("messages").len(), 1);
    assert_eq!(page.body["has_more"], false);
    http.get(
        &format!("/api/sessions/{session_id}/messages"),
        &stack.token("seek9", Role::Seeker),
    )
    .await
    .expect_status(404);
    http.get(
        &format!("/api/sessions/{session_id}/messages?limit=abc"),
        &token,
    )
    .await
    .expect_status(422);
}

#[tokio::test]
async fn no_chat_frame_or_history_row_names_the_other_party() {
    let stack = stack().await;
    let http = stack.http();
    let secrets = [
        "Seeker Secretname",
        "9111111111",
        "Provider Secretname",
        "9222222222",
    ];
    http.put(
        "/api/me/profile",
        &stack.token_named("seekerid-7f3a", Role::Seeker, "Seeker Secretname"),
        json!({"name": secrets[0], "mobile": secrets[1]}),
    )
    .await
    .expect_status(200);
    http.put(
        "/api/me/profile",
        &stack.token_named("providerid-9c1b", Role::Provider, "Provider Secretname"),
        json!({"name": secrets[2], "mobile": secrets[3]}),
    )
    .await
    .expect_status(200);
    let (mut seeker, mut provider, session_id, _) =
        stack.session("seekerid-7f3a", "providerid-9c1b").await;
    let mut frames = Vec::new();
    provider
        .send(json!({"type": "start_chat", "session_id": session_id}))
        .await;
    frames.push(seeker.expect("chat_ready").await);
    frames.push(provider.expect("chat_ready").await);
    seeker
        .send(json!({"type": "typing_indicator", "session_id": session_id, "is_typing": true}))
        .await;
    frames.push(provider.expect("typing_indicator").await);
    let sent = say(&mut seeker, &session_id, "hi").await;
    frames.push(sent.clone());
    frames.push(provider.expect("chat_message").await);
    provider
        .send(json!({"type": "message_read", "message_id": sent["message_id"]}))
        .await;
    frames.push(seeker.expect("message_status_update").await);
    provider
        .send(json!({"type": "resume", "session_id": session_id, "last_seq": 0}))
        .await;
    frames.push(provider.expect("session_state").await);
    frames.push(provider.expect("chat_message").await);
    let history = http
        .get(
            &format!("/api/sessions/{session_id}/messages"),
            &stack.token("providerid-9c1b", Role::Provider),
        )
        .await
        .expect_status(200);
    frames.push(history.body);
    for frame in frames {
        let text = frame.to_string();
        for secret in secrets
            .iter()
            .chain(["seekerid-7f3a", "providerid-9c1b"].iter())
        {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }
}

#[tokio::test]
async fn messages_sent_while_no_chat_worker_runs_are_handled_when_one_starts() {
    let mut stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    stack.kill_workers("chat");
    for index in 1..=5 {
        seeker.send(json!({"type": "chat_message", "session_id": session_id, "message": format!("m{index}")})).await;
    }
    seeker
        .expect_no("message_sent", Duration::from_millis(500))
        .await;
    stack.start_worker("chat");
    for index in 1..=5 {
        assert_eq!(
            seeker.expect("message_sent").await["seq"],
            FIRST_SEQ - 1 + index
        );
        assert_eq!(
            provider.expect("chat_message").await["message"],
            format!("m{index}")
        );
    }
}

#[tokio::test]
async fn a_chat_worker_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let total = 1000;
    let sender = tokio::spawn(async move {
        for index in 1..=total {
            seeker.send(json!({"type": "chat_message", "session_id": session_id, "message": format!("m{index}")})).await;
        }
        seeker
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    stack.kill_workers("chat");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.start_worker("chat");
    let mut seeker = sender.await.expect("sender");
    let mut received = HashSet::new();
    let mut frames = 0;
    while received.len() < total {
        let Some(message) = provider.find("chat_message", Duration::from_secs(20)).await else {
            break;
        };
        frames += 1;
        received.insert(message["message"].as_str().expect("text").to_owned());
    }
    assert_eq!(received.len(), total, "every message arrives");
    provider
        .expect_no("chat_message", Duration::from_millis(500))
        .await;
    assert_eq!(frames, total, "no message arrives twice");
    let mut confirmations = HashSet::new();
    while let Some(sent) = seeker.find("message_sent", Duration::from_secs(2)).await {
        confirmations.insert(sent["seq"].as_i64().expect("seq"));
    }
    assert_eq!(confirmations.len(), total);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        total as i64
    );
    assert_eq!(
        stack
            .count("SELECT count(DISTINCT message_text) FROM chat_messages WHERE kind <> 'system'")
            .await,
        total as i64
    );
    assert_eq!(
        stack.count("SELECT max(seq) FROM chat_messages").await,
        FIRST_SEQ - 1 + total as i64
    );
}

#[tokio::test]
async fn messages_are_deleted_after_retention() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat", "expiry"])
            .env("CHAT_RETENTION_SECS", "1")
            .env("EXPIRY_SWEEP_SECS", "1"),
    )
    .await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    say(&mut seeker, &session_id, "soon gone").await;
    seeker
        .send(json!({"type": "finish_service", "session_id": session_id}))
        .await;
    seeker.expect("service_finished").await;
    let token = stack.token("seek1", Role::Seeker);
    let kept = stack
        .http()
        .get(&format!("/api/sessions/{session_id}/messages"), &token)
        .await
        .expect_status(200);
    let kept: Vec<&Value> = kept.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|message| message["sender_type"] != "system")
        .collect();
    assert_eq!(kept.len(), 1, "history remains after the end");
    let remaining = stack
        .count_until(
            "SELECT count(*) FROM chat_messages WHERE kind <> 'system'",
            0,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        remaining, 0,
        "the expiry worker deleted the expired message"
    );
    let gone = stack
        .http()
        .get(&format!("/api/sessions/{session_id}/messages"), &token)
        .await
        .expect_status(200);
    assert_eq!(gone.body["messages"].as_array().expect("messages").len(), 0);
}

#[tokio::test]
async fn chat_after_the_session_ended_is_refused() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let sent = say(&mut seeker, &session_id, "bye").await;
    provider.expect("chat_message").await;
    provider
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    provider.expect_closed().await;
    seeker.expect_closed().await;
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "late"}))
        .await;
    assert_eq!(seeker.expect_error().await, "session already ended");
    provider
        .send(json!({"type": "message_read", "message_id": sent["message_id"]}))
        .await;
    assert_eq!(provider.expect_error().await, "session already ended");
    seeker
        .send(json!({"type": "typing_indicator", "session_id": session_id, "is_typing": true}))
        .await;
    assert_eq!(seeker.expect_error().await, "session already ended");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        1
    );
}

#[tokio::test]
async fn resume_names_only_the_resuming_partys_own_client_message_ids() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "mine", "client_message_id": "c-42"}))
        .await;
    seeker.expect("message_sent").await;
    assert!(
        provider
            .expect("chat_message")
            .await
            .get("client_message_id")
            .is_none()
    );
    seeker
        .send(json!({"type": "resume", "session_id": session_id, "last_seq": 0}))
        .await;
    seeker.expect("session_state").await;
    assert_eq!(
        seeker.expect("chat_message").await["client_message_id"],
        "c-42"
    );
    provider
        .send(json!({"type": "resume", "session_id": session_id, "last_seq": 0}))
        .await;
    provider.expect("session_state").await;
    assert!(
        provider
            .expect("chat_message")
            .await
            .get("client_message_id")
            .is_none()
    );
}

#[tokio::test]
async fn a_users_second_device_sees_their_own_message_with_its_text() {
    let stack = stack().await;
    let (mut phone, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let mut browser = stack.connect("seek1", Role::Seeker).await;
    phone
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "from my phone", "client_message_id": "p-1"}))
        .await;
    let on_phone = phone.expect("message_sent").await;
    assert_eq!(on_phone["client_message_id"], "p-1");
    let on_browser = browser.expect("message_sent").await;
    assert_eq!(on_browser["message_id"], on_phone["message_id"]);
    assert_eq!(on_browser["seq"], on_phone["seq"]);
    assert_eq!(on_browser["message"], "from my phone");
    assert_eq!(on_browser["sender_type"], "seeker");
    let received = provider.expect("chat_message").await;
    assert_eq!(received["message_id"], on_phone["message_id"]);
    // Each socket gets it once.
    phone
        .expect_no("message_sent", Duration::from_millis(300))
        .await;
    browser
        .expect_no("message_sent", Duration::from_millis(100))
        .await;
}

#[tokio::test]
async fn resume_after_a_long_absence_comes_in_pages_of_200_with_has_more() {
    let stack = stack().await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider.close().await;
    for index in 1..=450 {
        seeker
            .send(json!({"type": "chat_message", "session_id": session_id, "message": format!("n{index}")}))
            .await;
    }
    for _ in 1..=450 {
        seeker.expect("message_sent").await;
    }
    let mut provider = stack.connect("prov1", Role::Provider).await;
    // Connecting alone re-sends the oldest 200 undelivered (contract section 7).
    for seq in FIRST_SEQ..FIRST_SEQ + 200 {
        assert_eq!(provider.expect("chat_message").await["seq"], seq);
    }
    // From after the system message of the session's start (seq 1).
    let mut last_seq = FIRST_SEQ - 1;
    for (page, (expected, more)) in [(200, true), (200, true), (50, false)]
        .into_iter()
        .enumerate()
    {
        provider
            .send(json!({"type": "resume", "session_id": session_id, "last_seq": last_seq}))
            .await;
        let state = provider.expect("session_state").await;
        assert_eq!(state["has_more"], more, "page {page}");
        for _ in 0..expected {
            let message = provider.expect("chat_message").await;
            assert_eq!(message["seq"], last_seq + 1, "page {page} is in order");
            last_seq += 1;
        }
        provider
            .expect_no("chat_message", Duration::from_millis(200))
            .await;
    }
    assert_eq!(last_seq, FIRST_SEQ - 1 + 450);
}

#[tokio::test]
async fn a_message_the_recipient_never_got_is_sent_again_when_they_connect() {
    let stack = stack().await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider.close().await;
    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(say(&mut seeker, &session_id, text).await["message_id"].clone());
    }
    // A plain connect, no resume: the undelivered messages come by themselves, oldest first.
    let mut provider = stack.connect("prov1", Role::Provider).await;
    for (id, text) in ids.iter().zip(["one", "two", "three"]) {
        let message = provider.expect("chat_message").await;
        assert_eq!(&message["message_id"], id);
        assert_eq!(message["message"], text);
        assert_eq!(message["sender_type"], "seeker");
    }
    provider
        .send(json!({"type": "message_delivered", "message_id": ids[0], "session_id": session_id}))
        .await;
    seeker.expect("message_status_update").await;
    provider.close().await;
    // What was marked delivered is not sent again; the rest is.
    let mut provider = stack.connect("prov1", Role::Provider).await;
    assert_eq!(provider.expect("chat_message").await["message_id"], ids[1]);
    assert_eq!(provider.expect("chat_message").await["message_id"], ids[2]);
    provider
        .expect_no("chat_message", Duration::from_millis(300))
        .await;
    // The sender's own messages are never re-sent to the sender.
    let mut seeker_again = stack.connect("seek1", Role::Seeker).await;
    seeker_again
        .expect_no("chat_message", Duration::from_millis(300))
        .await;
}

#[tokio::test]
async fn a_nats_restart_loses_no_chat_message_for_a_client_that_never_resumes() {
    let mut stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let mut acknowledged = HashSet::new();
    let send = |index: usize| json!({"type": "chat_message", "session_id": session_id, "message": format!("m{index}"), "client_message_id": format!("c{index}")});
    for index in 0..10 {
        seeker.send(send(index)).await;
        let sent = seeker.expect("message_sent").await;
        acknowledged.insert(sent["message_id"].as_str().unwrap_or_default().to_owned());
    }
    stack.restart_nats().await;
    // The seeker keeps writing through the outage, re-sending (same client id) what was refused,
    // as a phone does; the provider's socket stays open and never sends `resume`.
    for index in 10..20 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            seeker.send(send(index)).await;
            match seeker
                .find_any(&["message_sent", "error"], Duration::from_secs(3))
                .await
            {
                Some(frame) if frame["type"] == "message_sent" => {
                    acknowledged
                        .insert(frame["message_id"].as_str().unwrap_or_default().to_owned());
                    break;
                }
                _ if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("message {index} never acknowledged: {other:?}"),
            }
        }
    }
    let mut received = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !acknowledged.is_subset(&received) && std::time::Instant::now() < deadline {
        if let Some(message) = provider
            .find("chat_message", Duration::from_millis(500))
            .await
        {
            received.insert(
                message["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    let missing: Vec<_> = acknowledged.difference(&received).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
}

#[tokio::test]
async fn a_gateway_that_lost_nats_gets_the_missed_messages_for_its_sockets_when_it_comes_back() {
    let stack = stack().await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider.close().await;
    // The provider's socket is on a second gateway whose NATS connection runs through a proxy.
    let proxy = system_tests::proxy::Proxy::start(stack.nats_address()).await;
    let gateway = stack
        .extra_gateway(&format!("127.0.0.1:{}", proxy.port))
        .await;
    let token = stack.token("prov1", Role::Provider);
    let mut provider = Client::connect(&gateway.address, Role::Provider, &token)
        .await
        .expect("provider on the second gateway");
    provider.assert_usable().await;
    say(&mut seeker, &session_id, "before").await;
    provider.expect("chat_message").await;
    // Its NATS connection drops: what the chat worker publishes meanwhile never reaches it.
    proxy.cut();
    let mut missed = Vec::new();
    for text in ["during one", "during two", "during three"] {
        missed.push(say(&mut seeker, &session_id, text).await["message_id"].clone());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    // The socket stayed open; once NATS is back the gateway announces it again and the chat
    // worker re-sends what was not delivered. The client never sent `resume`.
    // ("before" was not marked delivered either, so it may come again: clients drop repeats.)
    let mut received = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while missed.iter().any(|id| !received.contains(id)) && std::time::Instant::now() < deadline {
        if let Some(message) = provider
            .find("chat_message", Duration::from_millis(500))
            .await
        {
            received.insert(message["message_id"].clone());
        }
    }
    for id in &missed {
        assert!(received.contains(id), "{id} never reached the provider");
    }
}

#[tokio::test]
async fn the_expiry_worker_keeps_the_planner_statistics_current_as_the_chat_grows() {
    // Without statistics the workers' prepared statements keep plans made for an empty table (a
    // sequential scan per receipt). This machine's Postgres runs without autovacuum.
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat", "expiry"])
            .without_rate_limits(),
    )
    .await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    // Analysed once its rows changed by more than 50 plus half its size.
    for number in 0..150 {
        say(&mut seeker, &session_id, &format!("message {number}")).await;
    }
    let analysed = stack
        .count_until(
            "SELECT count(*) FROM pg_stat_user_tables WHERE relname = 'chat_messages'
             AND coalesce(last_analyze, last_autoanalyze) IS NOT NULL AND n_mod_since_analyze < 100",
            1,
            Duration::from_secs(25),
        )
        .await;
    assert_eq!(
        analysed, 1,
        "chat_messages was analysed after its rows changed"
    );
}
