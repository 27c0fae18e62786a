//! Contract section 9: message kinds, system messages, read-up-to and the inbox.

use serde_json::{Value, json};
use shared::auth::Role;
use std::time::Duration;
use system_tests::{Client, FIRST_SEQ, StackOptions, TestStack};

async fn stack() -> TestStack {
    TestStack::with(StackOptions::default().only(&["lifecycle", "mediums", "chat"])).await
}

async fn say(client: &mut Client, session_id: &str, text: &str) -> Value {
    client
        .send(json!({"type": "chat_message", "session_id": session_id, "message": text}))
        .await;
    client.expect("message_sent").await
}

async fn history(stack: &TestStack, session_id: &str, user: &str, role: Role) -> Vec<Value> {
    let token = stack.token(user, role);
    let page = stack
        .http()
        .get(&format!("/api/sessions/{session_id}/messages"), &token)
        .await
        .expect_status(200);
    page.body["messages"].as_array().expect("messages").clone()
}

#[tokio::test]
async fn the_session_start_writes_a_system_message_with_the_first_seq() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    for client in [&mut seeker, &mut provider] {
        let system = client.expect("system_message").await;
        assert_eq!(system["session_id"], session_id.as_str());
        assert_eq!(system["seq"], 1);
        assert_eq!(
            system["message"],
            "The provider accepted the work order. Chat is now active."
        );
    }
    assert_eq!(
        say(&mut seeker, &session_id, "hello").await["seq"],
        FIRST_SEQ
    );
    let messages = history(&stack, &session_id, "prov1", Role::Provider).await;
    assert_eq!(messages[0]["sender_type"], "system");
    assert_eq!(messages[0]["kind"], "system");
    assert_eq!(
        messages[0]["delivery_status"], "read",
        "system messages count as read"
    );
    assert_eq!(messages[1]["kind"], "text");
    // `resume` replays it as `system_message`, in seq order with the rest.
    provider
        .send(json!({"type": "resume", "session_id": session_id, "last_seq": 0}))
        .await;
    provider.expect("session_state").await;
    assert_eq!(provider.expect("system_message").await["seq"], 1);
    assert_eq!(provider.expect("chat_message").await["seq"], FIRST_SEQ);
}

#[tokio::test]
async fn cancelling_writes_a_system_message_naming_the_role_before_the_sockets_close() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    seeker
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    for client in [&mut seeker, &mut provider] {
        client.expect("system_message").await; // the start
        let ended = client.expect("system_message").await;
        assert_eq!(ended["message"], "The seeker cancelled the session.");
        assert_eq!(ended["seq"], 2);
        client.expect("connection_cancelled").await;
        client.expect_closed().await;
    }
}

#[tokio::test]
async fn message_kinds_travel_with_their_fields_to_the_other_party_resume_and_history() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let location = json!({"type": "chat_message", "session_id": session_id, "kind": "location",
        "latitude": 28.61, "longitude": 77.21, "message": "I am here"});
    let image = json!({"type": "chat_message", "session_id": session_id, "kind": "image",
        "url": "https://cdn.example.com/tap.jpg", "name": "tap.jpg", "size_bytes": 52311,
        "mime_type": "image/jpeg"});
    let file = json!({"type": "chat_message", "session_id": session_id, "kind": "file",
        "url": "https://cdn.example.com/quote.pdf"});
    for frame in [&location, &image, &file] {
        seeker.send(frame.clone()).await;
        let sent = seeker.expect("message_sent").await;
        assert_eq!(
            sent["kind"], frame["kind"],
            "the sender's other devices see the kind"
        );
    }
    let received = provider.expect("chat_message").await;
    assert_eq!(received["kind"], "location");
    assert_eq!(received["latitude"], 28.61);
    assert_eq!(received["longitude"], 77.21);
    assert_eq!(received["message"], "I am here");
    let received = provider.expect("chat_message").await;
    assert_eq!(received["kind"], "image");
    assert_eq!(received["url"], "https://cdn.example.com/tap.jpg");
    assert_eq!(received["name"], "tap.jpg");
    assert_eq!(received["size_bytes"], 52311);
    assert_eq!(received["mime_type"], "image/jpeg");
    assert_eq!(received["message"], "", "no caption");
    let received = provider.expect("chat_message").await;
    assert_eq!(received["kind"], "file");
    assert!(received.get("name").is_none());

    let messages = history(&stack, &session_id, "seek1", Role::Seeker).await;
    let kinds: Vec<&str> = messages
        .iter()
        .map(|message| message["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(kinds, ["system", "location", "image", "file"]);
    assert_eq!(messages[2]["url"], "https://cdn.example.com/tap.jpg");
    provider
        .send(json!({"type": "resume", "session_id": session_id, "last_seq": FIRST_SEQ}))
        .await;
    provider.expect("session_state").await;
    let replayed = provider.expect("chat_message").await;
    assert_eq!(replayed["kind"], "image");
    assert_eq!(replayed["size_bytes"], 52311);
}

#[tokio::test]
async fn invalid_kinds_and_their_fields_are_refused_and_store_nothing() {
    let stack = stack().await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    let cases = [
        (
            json!({"kind": "video", "url": "https://x.example/v.mp4"}),
            "kind must be one of text, location, image, file",
        ),
        (
            json!({"kind": "system", "message": "fake"}),
            "kind must be one of text, location, image, file",
        ),
        (
            json!({"kind": "location", "latitude": 91.0, "longitude": 0.0}),
            "invalid coordinates: latitude must be -90..90 and longitude -180..180",
        ),
        (
            json!({"kind": "location"}),
            "invalid coordinates: latitude must be -90..90 and longitude -180..180",
        ),
        (
            json!({"kind": "image", "url": "http://x.example/a.jpg"}),
            "url is required: an https:// address of at most 2048 characters",
        ),
        (
            json!({"kind": "file"}),
            "url is required: an https:// address of at most 2048 characters",
        ),
        (
            json!({"kind": "file", "url": format!("https://x.example/{}", "a".repeat(2040))}),
            "url is required: an https:// address of at most 2048 characters",
        ),
        (
            json!({"kind": "file", "url": "https://x.example/a b"}),
            "url is required: an https:// address of at most 2048 characters",
        ),
        (
            json!({"kind": "file", "url": "https://x.example/a", "size_bytes": -1}),
            "size_bytes must be a non-negative integer",
        ),
        (
            json!({"kind": "file", "url": "https://x.example/a", "name": "n".repeat(256)}),
            "name must be text of at most 255 characters",
        ),
        (
            json!({"kind": "file", "url": "https://x.example/a", "mime_type": "a\u{0}b"}),
            "mime_type must not contain U+0000",
        ),
        (json!({"kind": "text"}), "message must not be empty"),
    ];
    for (fields, error) in cases {
        let mut frame = json!({"type": "chat_message", "session_id": session_id});
        for (key, value) in fields.as_object().expect("object") {
            frame[key] = value.clone();
        }
        seeker.send(frame).await;
        assert_eq!(seeker.expect_error().await, error, "{fields}");
    }
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        0
    );
    assert_eq!(
        say(&mut seeker, &session_id, "still fine").await["seq"],
        FIRST_SEQ
    );
}

#[tokio::test]
async fn messages_read_marks_everything_up_to_a_seq_read_and_tells_the_sender_once() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    for text in ["one", "two", "three"] {
        say(&mut seeker, &session_id, text).await;
    }
    provider
        .send(
            json!({"type": "messages_read", "session_id": session_id, "up_to_seq": FIRST_SEQ + 1}),
        )
        .await;
    let read = seeker.expect("messages_read").await;
    assert_eq!(read["session_id"], session_id.as_str());
    assert_eq!(read["reader_role"], "provider");
    assert_eq!(read["up_to_seq"], FIRST_SEQ + 1);
    seeker
        .expect_no("message_status_update", Duration::from_millis(300))
        .await;
    let statuses: Vec<Value> = history(&stack, &session_id, "seek1", Role::Seeker)
        .await
        .into_iter()
        .filter(|message| message["sender_type"] == "seeker")
        .map(|message| message["delivery_status"].clone())
        .collect();
    assert_eq!(statuses, ["read", "read", "sent"]);
    // Nothing changes a second time: no event.
    provider
        .send(
            json!({"type": "messages_read", "session_id": session_id, "up_to_seq": FIRST_SEQ + 1}),
        )
        .await;
    seeker
        .expect_no("messages_read", Duration::from_millis(500))
        .await;
    // The reader's own messages are not theirs to read.
    say(&mut provider, &session_id, "on my way").await;
    provider
        .send(json!({"type": "messages_read", "session_id": session_id, "up_to_seq": 100}))
        .await;
    assert_eq!(seeker.expect("messages_read").await["up_to_seq"], 100);
    let statuses: Vec<Value> = history(&stack, &session_id, "seek1", Role::Seeker)
        .await
        .into_iter()
        .map(|message| message["delivery_status"].clone())
        .collect();
    assert_eq!(statuses, ["read", "read", "read", "read", "sent"]);
    for bad in [json!(-1), json!("3"), json!(null)] {
        provider
            .send(json!({"type": "messages_read", "session_id": session_id, "up_to_seq": bad}))
            .await;
        assert_eq!(
            provider.expect_error().await,
            "up_to_seq must be a non-negative integer"
        );
    }
}

#[tokio::test]
async fn reading_over_rest_answers_the_unread_count_and_tells_the_sender() {
    let stack = stack().await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    for text in ["one", "two", "three"] {
        say(&mut seeker, &session_id, text).await;
    }
    let token = stack.token("prov1", Role::Provider);
    let answer = stack
        .http()
        .post(
            &format!("/api/sessions/{session_id}/read"),
            &token,
            json!({"up_to_seq": FIRST_SEQ}),
        )
        .await
        .expect_status(200);
    assert_eq!(answer.body["session_id"], session_id.as_str());
    assert_eq!(answer.body["up_to_seq"], FIRST_SEQ);
    assert_eq!(answer.body["unread_count"], 2);
    assert_eq!(
        seeker.expect("messages_read").await["reader_role"],
        "provider"
    );
    // A stranger learns nothing; a bad body is a 422.
    let stranger = stack.token("prov9", Role::Provider);
    stack
        .http()
        .post(
            &format!("/api/sessions/{session_id}/read"),
            &stranger,
            json!({"up_to_seq": 9}),
        )
        .await
        .expect_status(404);
    stack
        .http()
        .post(
            &format!("/api/sessions/{session_id}/read"),
            &token,
            json!({"up_to_seq": "x"}),
        )
        .await
        .expect_status(422);
}

#[tokio::test]
async fn the_inbox_lists_sessions_by_latest_activity_with_last_message_and_unread_count() {
    let stack = stack().await;
    // An ended session with a message, then a live one with two.
    let (mut seeker, _provider, first, _) = stack.session("seek1", "prov1").await;
    say(&mut seeker, &first, "first session").await;
    seeker
        .send(json!({"type": "cancel_connection", "session_id": first}))
        .await;
    seeker.expect_closed().await;
    let (mut seeker, _provider, second, _) = stack.session("seek1", "prov2").await;
    say(&mut seeker, &second, &"x".repeat(150)).await;
    seeker
        .send(json!({"type": "chat_message", "session_id": second, "kind": "location", "latitude": 1.0, "longitude": 2.0}))
        .await;
    seeker.expect("message_sent").await;

    let provider_token = stack.token("prov2", Role::Provider);
    let inbox = stack
        .http()
        .get("/api/conversations", &provider_token)
        .await
        .expect_status(200);
    let conversations = inbox.body["conversations"].as_array().expect("list");
    assert_eq!(conversations.len(), 1, "only the provider's own sessions");
    let conversation = &conversations[0];
    assert_eq!(conversation["session_id"], second.as_str());
    assert_eq!(conversation["my_role"], "provider");
    assert_eq!(conversation["service_type"], "Plumbing");
    assert_eq!(conversation["unread_count"], 2);
    assert_eq!(conversation["last_message"]["kind"], "location");
    assert_eq!(conversation["last_message"]["preview"], "[location]");
    assert_eq!(conversation["last_message"]["seq"], FIRST_SEQ + 1);
    assert!(conversation["dispute"].is_null());

    // The seeker's inbox, one per page: the live session, then the ended one.
    let seeker_token = stack.token("seek1", Role::Seeker);
    let page = stack
        .http()
        .get("/api/conversations?limit=1", &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(page.body["conversations"][0]["session_id"], second.as_str());
    assert_eq!(
        page.body["conversations"][0]["unread_count"], 0,
        "own messages are not unread"
    );
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let page = stack
        .http()
        .get(
            &format!("/api/conversations?limit=1&before={cursor}"),
            &seeker_token,
        )
        .await
        .expect_status(200);
    let ended = &page.body["conversations"][0];
    assert_eq!(ended["session_id"], first.as_str());
    assert_eq!(ended["connection_state"], "cancelled");
    assert_eq!(ended["last_message"]["sender_type"], "system");
    assert_eq!(
        ended["last_message"]["preview"],
        "The seeker cancelled the session."
    );
    assert!(page.body["next_cursor"].is_null());
    stack
        .http()
        .get("/api/conversations?before=nonsense", &seeker_token)
        .await
        .expect_status(422);
}
