//! Contract section 10: disputes and mediators. A party opens a dispute, a mediator joins the
//! chat as a third participant (roles only), and resolves it; the chat stays writable and kept
//! while the dispute is unresolved, even after the session ended.

use serde_json::{Value, json};
use shared::auth::Role;
use std::time::Duration;
use system_tests::{Client, StackOptions, TestStack};

async fn say(client: &mut Client, session_id: &str, text: &str) -> Value {
    client
        .send(json!({"type": "chat_message", "session_id": session_id, "message": text}))
        .await;
    client.expect("message_sent").await
}

/// Waits for the system message with `text` (skipping earlier ones).
async fn expect_system(client: &mut Client, text: &str) -> Value {
    loop {
        let message = client.expect("system_message").await;
        if message["message"]
            .as_str()
            .is_some_and(|said| said.starts_with(text))
        {
            return message;
        }
    }
}

async fn open_dispute(stack: &TestStack, session_id: &str, user: &str, role: Role) -> Value {
    let token = stack.token(user, role);
    let opened = stack
        .http()
        .post(
            &format!("/api/sessions/{session_id}/dispute"),
            &token,
            json!({"reason": "The work was not done"}),
        )
        .await
        .expect_status(201);
    opened.body
}

#[tokio::test]
async fn a_three_party_dispute_from_opening_to_resolution() {
    let stack =
        TestStack::with(StackOptions::default().only(&["lifecycle", "mediums", "chat"])).await;
    let (mut seeker, mut provider, session_id) = stack.active_session("seek1", "prov1").await;
    say(&mut seeker, &session_id, "before the dispute").await;
    provider.expect("chat_message").await;
    let http = stack.http();

    let dispute = open_dispute(&stack, &session_id, "seek1", Role::Seeker).await;
    assert_eq!(dispute["status"], "open");
    assert_eq!(dispute["opened_by"], "seeker");
    assert_eq!(dispute["mediator_joined"], false);
    assert_eq!(dispute["reason"], "The work was not done");
    let dispute_id = dispute["dispute_id"].as_str().expect("id").to_owned();
    for client in [&mut seeker, &mut provider] {
        expect_system(client, "The seeker opened a dispute").await;
    }
    let again = stack.token("prov1", Role::Provider);
    http.post(
        &format!("/api/sessions/{session_id}/dispute"),
        &again,
        json!({"reason": "me too"}),
    )
    .await
    .expect_status(409);

    // Mediators see it in the queue; the first to join wins.
    let first = stack.token("med1", Role::Mediator);
    let second = stack.token("med2", Role::Mediator);
    let queue = http
        .get("/api/disputes?status=open", &first)
        .await
        .expect_status(200);
    assert!(
        queue.body["disputes"]
            .as_array()
            .expect("list")
            .iter()
            .any(|d| d["dispute_id"] == dispute_id.as_str())
    );
    let joined = http
        .post(
            &format!("/api/disputes/{dispute_id}/join"),
            &first,
            json!({}),
        )
        .await
        .expect_status(200);
    assert_eq!(joined.body["status"], "joined");
    assert_eq!(joined.body["mediator_joined"], true);
    http.post(
        &format!("/api/disputes/{dispute_id}/join"),
        &second,
        json!({}),
    )
    .await
    .expect_status(409);
    for client in [&mut seeker, &mut provider] {
        expect_system(client, "A mediator from the platform joined").await;
    }

    // Three parties in one chat, roles only.
    let mut mediator = stack.connect("med1", Role::Mediator).await;
    mediator
        .send(json!({"type": "resume", "session_id": session_id, "last_seq": 0}))
        .await;
    let state = mediator.expect("session_state").await;
    assert!(state.get("rating_stars").is_none());
    assert!(state["presence"]["mediator"].is_boolean());
    let from_seeker = mediator.expect("chat_message").await;
    assert_eq!(from_seeker["message"], "before the dispute");
    let sent = say(&mut mediator, &session_id, "Hello both, I am the mediator.").await;
    assert_eq!(sent["sender_type"], "mediator");
    for client in [&mut seeker, &mut provider] {
        let heard = client.expect("chat_message").await;
        assert_eq!(heard["sender_type"], "mediator");
        assert_eq!(heard["message"], "Hello both, I am the mediator.");
        assert!(heard.get("sender_id").is_none() && heard.get("user_id").is_none());
    }
    // A party's receipt on the mediator's message moves it (it no longer counts as unread) and
    // tells nobody: receipts stay between the parties.
    seeker
        .send(json!({"type": "message_read", "message_id": sent["message_id"]}))
        .await;
    mediator
        .expect_no("message_status_update", Duration::from_millis(500))
        .await;
    let status: String = sqlx::query_scalar(
        "SELECT delivery_status FROM chat_messages WHERE sender_type = 'mediator'",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("the mediator's message");
    assert_eq!(status, "read");
    say(&mut provider, &session_id, "The pipe still leaks.").await;
    assert_eq!(
        mediator.expect("chat_message").await["sender_type"],
        "provider"
    );
    seeker.expect("chat_message").await;
    mediator
        .send(json!({"type": "typing_indicator", "session_id": session_id, "is_typing": true}))
        .await;
    for client in [&mut seeker, &mut provider] {
        assert_eq!(
            client.expect("typing_indicator").await["user_type"],
            "mediator"
        );
    }
    // The mediator's inbox counts what they have not read yet...
    let mediator_inbox = http
        .get("/api/conversations", &first)
        .await
        .expect_status(200);
    let listed = &mediator_inbox.body["conversations"][0];
    assert_eq!(listed["session_id"], session_id.as_str());
    assert_eq!(listed["my_role"], "mediator");
    assert_eq!(
        listed["unread_count"], 2,
        "the seeker's and the provider's messages"
    );
    // ...and their reading changes no status and tells nobody, but clears their own count.
    mediator
        .send(json!({"type": "messages_read", "session_id": session_id, "up_to_seq": 100}))
        .await;
    provider
        .expect_no("messages_read", Duration::from_millis(500))
        .await;
    let mediator_inbox = http
        .get("/api/conversations", &first)
        .await
        .expect_status(200);
    assert_eq!(mediator_inbox.body["conversations"][0]["unread_count"], 0);

    // Who may see the dispute: its parties and its mediator; nobody else learns it exists.
    let seeker_token = stack.token("seek1", Role::Seeker);
    http.get(&format!("/api/disputes/{dispute_id}"), &seeker_token)
        .await
        .expect_status(200);
    http.get(&format!("/api/disputes/{dispute_id}"), &second)
        .await
        .expect_status(404);
    http.get(
        &format!("/api/disputes/{dispute_id}"),
        &stack.token("seek9", Role::Seeker),
    )
    .await
    .expect_status(404);
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["presence"]["mediator"], true);
    let history = http
        .get(&format!("/api/sessions/{session_id}/messages"), &first)
        .await
        .expect_status(200);
    assert!(history.body["messages"].as_array().expect("messages").len() >= 6);

    // Another mediator cannot resolve it; its own mediator does, and leaves the chat.
    http.post(
        &format!("/api/disputes/{dispute_id}/resolve"),
        &second,
        json!({"resolution": "x"}),
    )
    .await
    .expect_status(404);
    let resolved = http
        .post(
            &format!("/api/disputes/{dispute_id}/resolve"),
            &first,
            json!({"resolution": "The provider comes back tomorrow at no charge."}),
        )
        .await
        .expect_status(200);
    assert_eq!(resolved.body["status"], "resolved");
    for client in [&mut seeker, &mut provider, &mut mediator] {
        let said = expect_system(client, "The mediator resolved the dispute").await;
        assert!(
            said["message"]
                .as_str()
                .expect("text")
                .contains("no charge")
        );
    }
    mediator
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "still here?"}))
        .await;
    assert_eq!(mediator.expect_error().await, "session not found");
    say(&mut seeker, &session_id, "after the resolution").await;
    mediator
        .expect_no("chat_message", Duration::from_millis(500))
        .await;
    let inbox = http
        .get("/api/conversations", &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(
        inbox.body["conversations"][0]["dispute"]["status"],
        "resolved"
    );
}

#[tokio::test]
async fn an_open_dispute_keeps_the_chat_writable_after_the_end_and_expiry_waits_for_its_resolution()
{
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "mediums", "chat", "distance", "expiry"])
            .env("CHAT_RETENTION_SECS", "1")
            .env("EXPIRY_SWEEP_SECS", "1"),
    )
    .await;
    let (mut seeker, provider, session_id) = stack.active_session("seek1", "prov1").await;
    say(&mut seeker, &session_id, "evidence").await;
    open_dispute(&stack, &session_id, "prov1", Role::Provider).await;
    drop(provider);
    seeker
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    seeker.expect_closed().await;

    // After the end: chat goes on, nothing else does.
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    say(&mut seeker, &session_id, "written after the end").await;
    seeker
        .send(json!({"type": "location_update", "session_id": session_id, "latitude": 1.0, "longitude": 1.0}))
        .await;
    assert_eq!(seeker.expect_error().await, "session already ended");
    seeker
        .send(json!({"type": "finish_service", "session_id": session_id}))
        .await;
    assert_eq!(seeker.expect_error().await, "session already ended");

    // Far past the retention, the messages are kept while the dispute is open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = stack
        .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
        .await;
    assert_eq!(kept, 2);

    let mediator = stack.token("med1", Role::Mediator);
    let http = stack.http();
    let queue = http
        .get("/api/disputes", &mediator)
        .await
        .expect_status(200);
    let dispute_id = queue.body["disputes"][0]["dispute_id"]
        .as_str()
        .expect("id")
        .to_owned();
    http.post(
        &format!("/api/disputes/{dispute_id}/join"),
        &mediator,
        json!({}),
    )
    .await
    .expect_status(200);
    http.post(
        &format!("/api/disputes/{dispute_id}/resolve"),
        &mediator,
        json!({"resolution": "Refunded."}),
    )
    .await
    .expect_status(200);
    // Resolved: now the retention runs, and the expiry worker deletes the chat.
    let remaining = stack
        .count_until(
            "SELECT count(*) FROM chat_messages",
            0,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(remaining, 0, "expired after the resolution");
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "late"}))
        .await;
    assert_eq!(seeker.expect_error().await, "session already ended");
}

#[tokio::test]
async fn only_mediators_handle_disputes_and_one_who_has_not_joined_sees_nothing() {
    let stack =
        TestStack::with(StackOptions::default().only(&["lifecycle", "mediums", "chat"])).await;
    let (_seeker, _provider, session_id) = stack.active_session("seek1", "prov1").await;
    let http = stack.http();
    let seeker_token = stack.token("seek1", Role::Seeker);
    http.get("/api/disputes", &seeker_token)
        .await
        .expect_status(403);
    // A stranger cannot open a dispute on someone else's session; a bad reason is a 422.
    http.post(
        &format!("/api/sessions/{session_id}/dispute"),
        &stack.token("seek9", Role::Seeker),
        json!({"reason": "x"}),
    )
    .await
    .expect_status(404);
    http.post(
        &format!("/api/sessions/{session_id}/dispute"),
        &seeker_token,
        json!({"reason": ""}),
    )
    .await
    .expect_status(422);
    http.post(
        &format!("/api/sessions/{session_id}/dispute"),
        &seeker_token,
        json!({"reason": "a\u{0}b"}),
    )
    .await
    .expect_status(422);
    let dispute = open_dispute(&stack, &session_id, "seek1", Role::Seeker).await;
    let dispute_id = dispute["dispute_id"].as_str().expect("id");
    let provider_token = stack.token("prov1", Role::Provider);
    http.post(
        &format!("/api/disputes/{dispute_id}/join"),
        &provider_token,
        json!({}),
    )
    .await
    .expect_status(403);
    http.post(
        &format!("/api/disputes/{dispute_id}/resolve"),
        &stack.token("med1", Role::Mediator),
        json!({"resolution": "no"}),
    )
    .await
    .expect_status(404);

    // A mediator's socket before joining: the session is as unknown as a made-up one.
    let mut mediator = stack.connect("med1", Role::Mediator).await;
    for frame in [
        json!({"type": "chat_message", "session_id": session_id, "message": "hi"}),
        json!({"type": "resume", "session_id": session_id, "last_seq": 0}),
        json!({"type": "messages_read", "session_id": session_id, "up_to_seq": 1}),
    ] {
        mediator.send(frame).await;
        assert_eq!(mediator.expect_error().await, "session not found");
    }
    for kind in [
        "location_update",
        "cancel_connection",
        "finish_service",
        "start_chat",
        "medium_selection",
    ] {
        mediator
            .send(
                json!({"type": kind, "session_id": session_id, "latitude": 1.0, "longitude": 1.0}),
            )
            .await;
        assert_eq!(
            mediator.expect_error().await,
            format!("{kind} is not allowed for a mediator")
        );
    }
    let token = stack.token("med1", Role::Mediator);
    http.get(&format!("/api/sessions/{session_id}/messages"), &token)
        .await
        .expect_status(404);
    // Mediators are refused on the parties' endpoints, and the parties on theirs.
    assert!(
        Client::connect(&stack.gateway, Role::Seeker, &token)
            .await
            .is_err()
    );
    assert!(
        Client::connect(&stack.gateway, Role::Mediator, &seeker_token)
            .await
            .is_err()
    );
}
