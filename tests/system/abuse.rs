//! One user cannot hurt another (contract section 12), at the gateway: ambient cookies from a
//! foreign origin, bodies not declared JSON, parallel upgrades past the socket cap, connections
//! that never finish their headers or come past the gateway's cap, sockets that outlive their
//! token, floods of bytes, `resume`s and binary frames, and large one-socket answers kept out of
//! the workers' stored events.

use serde_json::json;
use shared::auth::Role;
use std::time::{Duration, Instant};
use system_tests::stack::JWT_SECRET;
use system_tests::{Client, StackOptions, TestStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ws_url(stack: &TestStack, role: Role) -> String {
    format!(
        "ws://{}{}",
        stack.gateway,
        system_tests::client::endpoint(role)
    )
}

#[tokio::test]
async fn a_foreign_origin_cannot_use_a_cookie() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let token = stack.token("seek1", Role::Seeker);
    let cookie = format!("token={token}");
    let own = format!("http://{}", stack.gateway);
    // A socket upgrade carrying only the cookie: from a foreign page, refused; from the
    // gateway's own page, accepted; with the token in the URL, the origin does not matter.
    let refused = Client::connect_url_with_headers(
        &ws_url(&stack, Role::Seeker),
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(refused.err().map(|refusal| refusal.status), Some(403));
    let no_origin =
        Client::connect_url_with_headers(&ws_url(&stack, Role::Seeker), &[("cookie", &cookie)])
            .await;
    assert_eq!(no_origin.err().map(|refusal| refusal.status), Some(403));
    let mut own_page = Client::connect_url_with_headers(
        &ws_url(&stack, Role::Seeker),
        &[("cookie", &cookie), ("origin", &own)],
    )
    .await
    .expect("the gateway's own page may use the cookie");
    own_page.assert_usable().await;
    let mut explicit = Client::connect_url_with_headers(
        &format!("{}?token={token}", ws_url(&stack, Role::Seeker)),
        &[("origin", "https://evil.example")],
    )
    .await
    .expect("a token the page had to know is not ambient");
    explicit.assert_usable().await;
    // REST: a foreign page's write with the cookie changes nothing; its read is answered (the
    // browser keeps the answer from the page).
    let http = reqwest::Client::new();
    let write = http
        .put(format!("http://{}/api/me/profile", stack.gateway))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body(r#"{"name":"Mallory was here","mobile":"9000000000"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(write.status().as_u16(), 403);
    let read = http
        .get(format!("http://{}/api/me/profile", stack.gateway))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(read.status().as_u16(), 200);
    let body: serde_json::Value = read.json().await.expect("json");
    assert_ne!(
        body["name"], "Mallory was here",
        "the foreign write changed nothing"
    );
    let own_write = http
        .put(format!("http://{}/api/me/profile", stack.gateway))
        .header("cookie", &cookie)
        .header("origin", &own)
        .header("content-type", "application/json")
        .body(r#"{"name":"Sam","mobile":"9000000000"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(own_write.status().as_u16(), 200);
}

#[tokio::test]
async fn a_rest_body_not_declared_json_is_refused_with_415() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let token = stack.token("seek1", Role::Seeker);
    let http = reqwest::Client::new();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let mut request = http
            .put(format!("http://{}/api/me/profile", stack.gateway))
            .bearer_auth(&token)
            .body(r#"{"name":"Plain","mobile":"9000000000"}"#);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let answer = request.send().await.expect("request");
        assert_eq!(answer.status().as_u16(), 415, "{content_type:?}");
    }
    let json = http
        .put(format!("http://{}/api/me/profile", stack.gateway))
        .bearer_auth(&token)
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"name":"Json","mobile":"9000000000"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(json.status().as_u16(), 200);
    let profile = stack.http().get("/api/me/profile", &token).await;
    assert_eq!(profile.body["name"], "Json");
}

#[tokio::test]
async fn parallel_upgrades_never_exceed_the_socket_cap() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let url = format!(
        "{}?token={}",
        ws_url(&stack, Role::Seeker),
        stack.token("many", Role::Seeker)
    );
    let attempts: Vec<_> = (0..30)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Client::connect_url(&url, None).await })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.expect("attempt") {
            Ok(client) => open.push(client),
            Err(refusal) => {
                assert_eq!(refusal.status, 429);
                refused += 1;
            }
        }
    }
    assert_eq!(open.len(), 10, "exactly the cap of 10 got through");
    assert_eq!(refused, 20);
    // A place freed is a place to take again.
    open.pop().expect("a socket").close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Client::connect_url(&url, None)
        .await
        .expect("a freed place is taken again");
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_after_ten_seconds() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let mut slow = tokio::net::TcpStream::connect(&stack.gateway)
        .await
        .expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .expect("half the headers");
    let started = Instant::now();
    let mut buffer = [0u8; 512];
    let outcome = tokio::time::timeout(Duration::from_secs(15), slow.read(&mut buffer)).await;
    let waited = started.elapsed();
    assert!(
        matches!(outcome, Ok(Ok(_)) | Ok(Err(_))),
        "the gateway closed the connection"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(13),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn the_gateway_refuses_connections_past_its_cap() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle"])
            .env("GATEWAY_MAX_CONNECTIONS", "4"),
    )
    .await;
    let mut held = Vec::new();
    for index in 0..4 {
        held.push(stack.connect(&format!("u{index}"), Role::Seeker).await);
    }
    let past = reqwest::get(format!("http://{}/health", stack.gateway)).await;
    assert!(past.is_err(), "a fifth connection is closed at once");
    held.pop().expect("a socket").close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = reqwest::get(format!("http://{}/health", stack.gateway))
        .await
        .expect("room again");
    assert_eq!(health.status().as_u16(), 200);
}

/// A token that expired `ago` seconds ago (still inside the 30 s leeway when `ago` < 30).
fn token_expired_ago(user_id: &str, role: Role, ago: i64) -> String {
    shared::auth::mint(JWT_SECRET, user_id, role, None, -ago).expect("token")
}

#[tokio::test]
async fn a_socket_is_closed_when_its_token_expires() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    // Two seconds of leeway left.
    let token = token_expired_ago("seek1", Role::Seeker, 28);
    let mut seeker = Client::connect(&stack.gateway, Role::Seeker, &token)
        .await
        .expect("still valid within the leeway");
    let started = Instant::now();
    assert_eq!(seeker.expect_error().await, "token expired");
    assert_eq!(seeker.expect_closed().await, 1008);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn auth_refresh_keeps_a_socket_open_past_its_first_token() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let mut seeker = Client::connect(
        &stack.gateway,
        Role::Seeker,
        &token_expired_ago("seek1", Role::Seeker, 28),
    )
    .await
    .expect("connect");
    // Another user's token is no refresh for this socket.
    seeker
        .send(json!({"type": "auth_refresh", "token": stack.token("seek2", Role::Seeker)}))
        .await;
    assert_eq!(
        seeker.expect_error().await,
        "token does not match this socket"
    );
    seeker
        .send(json!({"type": "auth_refresh", "token": stack.token("seek1", Role::Seeker)}))
        .await;
    let refreshed = seeker.expect("auth_refreshed").await;
    assert!(refreshed["exp"].as_i64().expect("exp") > chrono::Utc::now().timestamp() + 3000);
    tokio::time::sleep(Duration::from_secs(4)).await;
    seeker.assert_usable().await;
}

#[tokio::test]
async fn a_byte_flood_is_rate_limited_like_a_frame_flood() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle", "chat"])).await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    // Ten frames of 60 KB in a burst: far under 20 frames a second, far over 64 KiB a second
    // (bursts of 256 KiB).
    let big = "x".repeat(60_000);
    for _ in 0..10 {
        seeker
            .send(json!({"type": "chat_message", "session_id": session_id, "message": big}))
            .await;
    }
    let mut limited = 0;
    while let Some(error) = seeker.find("error", Duration::from_secs(2)).await {
        if error["error"] == "rate limit exceeded" {
            limited += 1;
        }
    }
    assert!(
        (5..=7).contains(&limited),
        "the bytes past the burst were refused: {limited} of 10"
    );
}

#[tokio::test]
async fn resume_costs_ten_frames_and_binary_frames_cost_one() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle", "chat"])).await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    // The burst is 40 tokens: four resumes.
    for _ in 0..5 {
        seeker
            .send(json!({"type": "resume", "session_id": session_id, "last_seq": 0}))
            .await;
    }
    let mut limited = 0;
    while let Some(error) = seeker.find("error", Duration::from_secs(1)).await {
        assert_eq!(error["error"], "rate limit exceeded");
        assert_eq!(error["request_type"], "resume");
        limited += 1;
    }
    assert_eq!(limited, 1, "the fifth resume is over the burst");
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Binary frames are refused, and each one takes a token like any frame.
    let mut other = stack.connect("seek9", Role::Seeker).await;
    for _ in 0..50 {
        other.send_binary(&[1, 2, 3]).await;
    }
    let mut invalid = 0;
    let mut over = 0;
    while let Some(error) = other.find("error", Duration::from_secs(1)).await {
        match error["error"].as_str() {
            Some("invalid JSON") => invalid += 1,
            Some("rate limit exceeded") => over += 1,
            other => panic!("unexpected error {other:?}"),
        }
    }
    assert!(
        invalid <= 41 && over >= 9,
        "{invalid} invalid, {over} over the limit"
    );
}

#[tokio::test]
async fn answers_to_one_socket_are_never_kept_in_the_workers_stored_events() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            .without_rate_limits(),
    )
    .await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    let text = "字".repeat(4000);
    for index in 0..20 {
        seeker
            .send(json!({"type": "chat_message", "session_id": session_id, "message": text, "client_message_id": format!("c{index}")}))
            .await;
        seeker.expect("message_sent").await;
    }
    for _ in 0..5 {
        seeker
            .send(json!({"type": "resume", "session_id": session_id, "last_seq": 0}))
            .await;
        seeker.expect("session_state").await;
    }
    let largest: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(octet_length(last_events)), 0)::bigint FROM partition_cursors",
    )
    .fetch_one(&stack.pool)
    .await
    .expect("cursor rows");
    assert!(
        largest < 64 * 1024,
        "a resume page (20 x 12 KB) is not stored with the cursor: largest row {largest} bytes"
    );
}
