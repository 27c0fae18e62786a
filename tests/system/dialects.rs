//! Contract section 11: the neighbouring systems' clients, driven with plain WebSocket clients as
//! their front-ends would, against the real stack, with a native socket on the other side.

use serde_json::json;
use shared::auth::Role;
use std::time::Duration;
use system_tests::{Client, FIRST_SEQ, StackOptions, TestStack};

/// Opens seed 002's conversation socket as `user` (`?token=`, as the seed's front-end does).
async fn conversation_socket(
    stack: &TestStack,
    session_id: &str,
    user: &str,
    role: Role,
) -> Result<Client, u16> {
    let token = stack.token(user, role);
    let url = format!("ws://{}/ws/chat/{session_id}/?token={token}", stack.gateway);
    Client::connect_url(&url, None)
        .await
        .map_err(|refused| refused.status)
}

#[tokio::test]
async fn a_seed_002_client_holds_a_whole_conversation_with_a_native_party() {
    let stack =
        TestStack::with(StackOptions::default().only(&["lifecycle", "mediums", "chat"])).await;
    let (seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    drop(seeker);
    let mut seed002 = conversation_socket(&stack, &session_id, "seek1", Role::Seeker)
        .await
        .expect("a participant's handshake is accepted");

    // The seed's frame; every participant (the sender too) gets the seed's `message`.
    seed002
        .send(json!({"message": "Hello from the old app", "type": "TEXT", "client_message_id": "tmp-1"}))
        .await;
    let echoed = seed002.expect("message").await;
    let message = &echoed["message"];
    assert_eq!(message["conversation_id"], session_id.as_str());
    assert_eq!(message["sender_id"], "seeker", "a role, never a user id");
    assert_eq!(message["sender_name"], "Seeker");
    assert_eq!(message["message_text"], "Hello from the old app");
    assert_eq!(message["message_type"], "TEXT");
    assert_eq!(message["seq"], FIRST_SEQ);
    assert_eq!(message["is_read"], false);
    assert!(message["id"].is_string() && message["timestamp"].is_string());
    let native = provider.expect("chat_message").await;
    assert_eq!(native["message"], "Hello from the old app");
    assert_eq!(native["message_id"], message["id"]);

    // The native party answers; the old app shows it.
    provider
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "On my way"}))
        .await;
    let answer = seed002.expect("message").await;
    assert_eq!(answer["message"]["sender_id"], "provider");
    assert_eq!(answer["message"]["sender_name"], "Provider");
    assert_eq!(answer["message"]["message_text"], "On my way");

    // A location, as section 9 has it.
    seed002
        .send(json!({"type": "LOCATION", "latitude": 28.6, "longitude": 77.2, "message": "here"}))
        .await;
    let location = seed002.expect("message").await;
    assert_eq!(location["message"]["message_type"], "LOCATION");
    assert_eq!(location["message"]["latitude"], 28.6);
    assert_eq!(provider.expect("chat_message").await["kind"], "location");

    // An empty TEXT is ignored, as the seed does; bad input is an error in the seed's shape.
    seed002.send(json!({"message": "", "type": "TEXT"})).await;
    seed002.send_text("not json").await;
    let error = seed002.expect("error").await;
    assert!(
        error["error"]
            .as_str()
            .expect("text")
            .contains("invalid JSON")
    );
    seed002.send(json!({"message": "x", "type": "VIDEO"})).await;
    assert!(
        seed002.expect("error").await["error"]
            .as_str()
            .expect("text")
            .contains("TEXT")
    );
    seed002
        .send(json!({"message": "a".repeat(4001), "type": "TEXT"}))
        .await;
    assert!(
        seed002.expect("error").await["error"]
            .as_str()
            .expect("text")
            .contains("4000")
    );

    // A reconnect and a resend with the same temporary id: no second message.
    seed002.close().await;
    let mut seed002 = conversation_socket(&stack, &session_id, "seek1", Role::Seeker)
        .await
        .expect("reconnected");
    seed002
        .send(json!({"message": "Hello from the old app", "type": "TEXT", "client_message_id": "tmp-1"}))
        .await;
    seed002
        .send(
            json!({"message": "After the reconnect", "type": "TEXT", "client_message_id": "tmp-2"}),
        )
        .await;
    // The provider's message was never marked delivered (the seed has no receipts): connecting
    // re-sends it, with the same id, before anything new.
    let resent = seed002.expect("message").await;
    assert_eq!(resent["message"]["message_text"], "On my way");
    assert_eq!(resent["message"]["id"], answer["message"]["id"]);
    assert_eq!(
        seed002.expect("message").await["message"]["message_text"],
        "After the reconnect"
    );
    assert_eq!(
        provider.expect("chat_message").await["message"],
        "After the reconnect",
        "the resend created nothing"
    );
    provider
        .expect_no("chat_message", Duration::from_millis(300))
        .await;
    assert_eq!(
        stack
            .count(
                "SELECT count(*) FROM chat_messages WHERE message_text = 'Hello from the old app'"
            )
            .await,
        1
    );
    // The end of the session is a system message in the old app too.
    provider
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    let ended = seed002.expect("message").await;
    assert_eq!(ended["message"]["sender_name"], "System");
    assert_eq!(
        ended["message"]["message_text"],
        "The provider cancelled the session."
    );
}

#[tokio::test]
async fn a_seed_002_handshake_is_refused_to_strangers_and_unknown_conversations() {
    let stack =
        TestStack::with(StackOptions::default().only(&["lifecycle", "mediums", "chat"])).await;
    let (_seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    assert_eq!(
        conversation_socket(&stack, &session_id, "seek2", Role::Seeker)
            .await
            .err(),
        Some(403)
    );
    let made_up = uuid::Uuid::new_v4().to_string();
    assert_eq!(
        conversation_socket(&stack, &made_up, "seek1", Role::Seeker)
            .await
            .err(),
        Some(403)
    );
    assert_eq!(
        conversation_socket(&stack, "1", "seek1", Role::Seeker)
            .await
            .err(),
        Some(403)
    );
    let url = format!("ws://{}/ws/chat/{session_id}/", stack.gateway);
    assert_eq!(
        Client::connect_url(&url, None)
            .await
            .err()
            .map(|refused| refused.status),
        Some(401)
    );
    // The token may come as a cookie, as browsers of the seed's front-end send it, from a page
    // of the gateway's own origin (or one of GATEWAY_CORS_ORIGINS); a foreign page's is refused.
    let token = stack.token("prov1", Role::Provider);
    let cookie = format!("theme=dark; token={token}");
    let foreign = Client::connect_url_with_headers(
        &url,
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(foreign.err().map(|refused| refused.status), Some(403));
    let own = format!("http://{}", stack.gateway);
    let mut by_cookie =
        Client::connect_url_with_headers(&url, &[("cookie", &cookie), ("origin", &own)])
            .await
            .expect("a cookie token is accepted from the gateway's own page");
    by_cookie
        .send(json!({"message": "by cookie", "type": "TEXT"}))
        .await;
    assert_eq!(
        by_cookie.expect("message").await["message"]["sender_id"],
        "provider"
    );
}
