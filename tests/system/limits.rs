//! Per-socket limits (contract section 7): what a client that sends too much gets, and that one
//! party's flood never reaches the other party's socket.

use serde_json::json;
use shared::auth::Role;
use std::time::{Duration, Instant};
use system_tests::{StackOptions, TestStack};

async fn chat_stack(env: &[(&str, &str)]) -> TestStack {
    let mut options = StackOptions::default().only(&["lifecycle", "mediums", "chat"]);
    for (key, value) in env {
        options = options.env(key, value);
    }
    TestStack::with(options).await
}

#[tokio::test]
async fn typing_flood_from_one_party_never_disconnects_the_other() {
    let stack = chat_stack(&[]).await;
    let (mut seeker, mut provider, session_id) = stack.active_session("s1", "p1").await;
    let started = Instant::now();
    for index in 0..5000 {
        let frame = json!({"type": "typing_indicator", "session_id": session_id, "is_typing": index % 2 == 0});
        seeker.send(frame).await;
    }
    let flood_seconds = started.elapsed().as_secs_f64();
    // Coalesced to at most two a second (plus the last one held back), never refused.
    seeker.expect_no("error", Duration::from_millis(300)).await;
    let mut typing_events = 0;
    while provider
        .find("typing_indicator", Duration::from_millis(1500))
        .await
        .is_some()
    {
        typing_events += 1;
    }
    assert!(typing_events >= 1, "the typing state still gets through");
    assert!(
        typing_events as f64 <= flood_seconds * 2.0 + 4.0,
        "{typing_events} typing events for a {flood_seconds:.1} s flood"
    );
    provider.assert_usable().await;
    seeker.assert_usable().await;
    assert_eq!(
        say_and_receive(&mut seeker, &mut provider, &session_id).await,
        "after the flood"
    );
}

async fn say_and_receive(
    seeker: &mut system_tests::Client,
    provider: &mut system_tests::Client,
    session_id: &str,
) -> String {
    seeker
        .send(
            json!({"type": "chat_message", "session_id": session_id, "message": "after the flood"}),
        )
        .await;
    seeker.expect("message_sent").await;
    provider.expect("chat_message").await["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn frames_over_the_rate_limit_are_refused_and_not_published() {
    let stack = chat_stack(&[]).await;
    let (mut seeker, _provider, session_id) = stack.active_session("s1", "p1").await;
    for index in 0..70 {
        seeker
            .send(json!({"type": "chat_message", "session_id": session_id, "message": format!("m{index}"), "client_message_id": format!("c{index}")}))
            .await;
    }
    let (mut sent, mut refused) = (0, 0);
    while sent + refused < 70 {
        let frame = seeker
            .find_any(&["message_sent", "error"], Duration::from_secs(5))
            .await
            .expect("every frame is answered");
        if frame["type"] == "error" {
            assert_eq!(frame["error"], "rate limit exceeded");
            assert_eq!(frame["request_type"], "chat_message");
            refused += 1;
        } else {
            sent += 1;
        }
    }
    // A burst of 40 (less the `medium_selection` the set-up sent a moment ago), plus what the
    // bucket refills while the frames arrive.
    assert!((39..=46).contains(&sent), "{sent} sent, {refused} refused");
    assert!(refused >= 24, "{sent} sent, {refused} refused");
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        sent as i64,
        "refused frames were not published"
    );
    // Pings are never refused; after a pause the socket sends again.
    seeker.assert_usable().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "later"}))
        .await;
    seeker.expect("message_sent").await;
}

#[tokio::test]
async fn a_socket_that_stays_over_the_limit_is_closed_with_1008() {
    let stack = chat_stack(&[("WS_RATE_CLOSE_SECS", "2")]).await;
    let mut socket = stack.connect("s1", Role::Seeker).await;
    let started = Instant::now();
    let mut closed = None;
    while started.elapsed() < Duration::from_secs(6) && closed.is_none() {
        for _ in 0..20 {
            socket.send_text(r#"{"type":"teleport"}"#).await;
        }
        if socket.disconnected_within(Duration::from_millis(50)).await {
            closed = socket.closed_with;
        }
    }
    assert_eq!(closed, Some(1008));
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn the_eleventh_socket_of_a_user_is_refused_with_429() {
    let stack = chat_stack(&[]).await;
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(stack.connect("s1", Role::Seeker).await);
    }
    let token = stack.token("s1", Role::Seeker);
    let refused = system_tests::Client::connect(&stack.gateway, Role::Seeker, &token).await;
    assert_eq!(refused.err().map(|refused| refused.status), Some(429));
    // Another user is not affected, and a closed socket frees its place.
    stack
        .connect("s2", Role::Seeker)
        .await
        .assert_usable()
        .await;
    if let Some(socket) = sockets.pop() {
        socket.close().await;
    }
    let mut again = None;
    for _ in 0..50 {
        if let Ok(socket) =
            system_tests::Client::connect(&stack.gateway, Role::Seeker, &token).await
        {
            again = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.expect("a freed place is taken").assert_usable().await;
}
