//! The gateway as clients and operators see it: auth on REST and sockets, the error frames it
//! judges itself, subject safety, the frame-size limit, keepalive, tracing on NATS, and the
//! operator endpoints.

use futures::StreamExt;
use serde_json::json;
use shared::auth::Role;
use std::time::Duration;
use system_tests::client::{Client, endpoint};
use system_tests::stack::JWT_SECRET;
use system_tests::{StackOptions, TestStack};

async fn gateway_only(env: &[(&str, &str)]) -> TestStack {
    let mut options = StackOptions::default().only(&["lifecycle"]);
    for (key, value) in env {
        options = options.env(key, value);
    }
    TestStack::with(options).await
}

#[tokio::test]
async fn rest_refuses_missing_bad_and_expired_tokens_with_401_and_wrong_roles_with_403() {
    let stack = gateway_only(&[]).await;
    let http = stack.http();
    let expired = shared::auth::mint(JWT_SECRET, "u1", Role::Seeker, None, -300).expect("token");
    let badly_signed =
        shared::auth::mint("another-secret", "u1", Role::Seeker, None, 300).expect("token");
    for token in ["", "not-a-jwt", expired.as_str(), badly_signed.as_str()] {
        let reply = http.get("/api/me/profile", token).await;
        assert_eq!(reply.status, 401, "token {token:?}");
        assert!(reply.body["error"].is_string());
    }
    let seeker = stack.token("u1", Role::Seeker);
    http.get("/api/provider/status", &seeker)
        .await
        .expect_status(403);
    http.get("/api/seeker/search", &stack.token("p1", Role::Provider))
        .await
        .expect_status(403);
    http.post(
        "/api/work-orders",
        &stack.token("p1", Role::Provider),
        json!({}),
    )
    .await
    .expect_status(403);
    http.get("/api/seeker/search", &seeker)
        .await
        .expect_status(200);
}

#[tokio::test]
async fn a_token_with_an_unknown_role_or_a_subject_with_wildcards_is_a_401() {
    let stack = gateway_only(&[]).await;
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        sub: &'a str,
        role: &'a str,
        exp: i64,
    }
    let sign = |sub: &str, role: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &Claims {
                sub,
                role,
                exp: chrono::Utc::now().timestamp() + 300,
            },
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .expect("token")
    };
    let http = stack.http();
    http.get("/api/me/profile", &sign("u1", "admin"))
        .await
        .expect_status(401);
    for sub in ["*", ">", "a.b", "a b", "user.*"] {
        http.get("/api/me/profile", &sign(sub, "seeker"))
            .await
            .expect_status(401);
        let refused = Client::connect(&stack.gateway, Role::Seeker, &sign(sub, "seeker")).await;
        assert_eq!(
            refused.err().map(|refused| refused.status),
            Some(401),
            "sub {sub:?}"
        );
    }
}

#[tokio::test]
async fn sockets_refuse_missing_bad_and_expired_tokens_and_wrong_roles() {
    let stack = gateway_only(&[]).await;
    let expired = shared::auth::mint(JWT_SECRET, "u1", Role::Seeker, None, -300).expect("token");
    for token in ["", "garbage", expired.as_str()] {
        let refused = Client::connect(&stack.gateway, Role::Seeker, token).await;
        assert_eq!(refused.err().map(|refused| refused.status), Some(401));
    }
    let seeker_token = stack.token("u1", Role::Seeker);
    let refused = Client::connect(&stack.gateway, Role::Provider, &seeker_token).await;
    assert_eq!(refused.err().map(|refused| refused.status), Some(403));
    // The header works as well as ?token=, with or without the trailing slash.
    let url = format!("ws://{}/ws/work/seeker", stack.gateway);
    let mut socket = Client::connect_url(&url, Some(&format!("Bearer {seeker_token}")))
        .await
        .expect("header auth");
    socket.assert_usable().await;
    let url = format!("ws://{}{}", stack.gateway, endpoint(Role::Seeker));
    assert_eq!(
        Client::connect_url(&url, None)
            .await
            .err()
            .map(|refused| refused.status),
        Some(401)
    );
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let stack = gateway_only(&[]).await;
    let mut socket = stack.connect("u1", Role::Seeker).await;
    socket.send(json!({"type": "ping"})).await;
    let pong = socket.expect("pong").await;
    assert!(
        pong["timestamp"]
            .as_str()
            .expect("timestamp")
            .ends_with('Z')
    );
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_socket_stays_open() {
    let stack = gateway_only(&[]).await;
    let mut seeker = stack.connect("u1", Role::Seeker).await;
    let session = uuid::Uuid::new_v4();
    let cases: Vec<(String, &str, serde_json::Value)> = vec![
        (String::from("{not json"), "invalid JSON", json!(null)),
        // serde reads an array into a struct by position: it must not pass for a ping.
        (
            String::from(r#"["ping"]"#),
            "unknown message type",
            json!(null),
        ),
        (String::from("[1,"), "invalid JSON", json!(null)),
        (String::from("{}"), "unknown message type", json!(null)),
        (
            json!({"type": "teleport"}).to_string(),
            "unknown message type",
            json!("teleport"),
        ),
        (
            json!({"type": 42}).to_string(),
            "unknown message type",
            json!(null),
        ),
        (
            json!({"type": "chat_message", "message": "hi"}).to_string(),
            "session_id is required",
            json!("chat_message"),
        ),
        (
            json!({"type": "location_update", "session_id": null}).to_string(),
            "session_id is required",
            json!("location_update"),
        ),
        (
            json!({"type": "message_read"}).to_string(),
            "message_id is required",
            json!("message_read"),
        ),
        (
            json!({"type": "cancel_connection", "session_id": "not-a-uuid"}).to_string(),
            "session not found",
            json!("cancel_connection"),
        ),
        (
            json!({"type": "cancel_connection", "session_id": session}).to_string(),
            "session not found",
            json!("cancel_connection"),
        ),
        (
            json!({"type": "message_delivered", "message_id": "nope"}).to_string(),
            "message not found",
            json!("message_delivered"),
        ),
    ];
    for (frame, error, request_type) in cases {
        seeker.send_text(&frame).await;
        let reply = seeker.expect("error").await;
        assert_eq!(reply["error"], error, "frame {frame}");
        assert_eq!(reply["request_type"], request_type, "frame {frame}");
    }
    seeker
        .send(json!({"type": "work_response", "work_id": 1, "accepted": true}))
        .await;
    let refused = seeker.expect("error").await;
    assert_eq!(
        refused["error"],
        "work_response is not allowed for a seeker"
    );
    let mut provider = stack.connect("p1", Role::Provider).await;
    provider
        .send(json!({"type": "medium_selection", "session_id": session, "mediums": {}}))
        .await;
    assert_eq!(
        provider.expect_error().await,
        "medium_selection is not allowed for a provider"
    );
    seeker.assert_usable().await;
    provider.assert_usable().await;
}

#[tokio::test]
async fn ids_with_subject_syntax_never_reach_a_subject() {
    let stack = gateway_only(&[]).await;
    let nats = stack.nats().await;
    let mut everything = nats.subscribe(">").await.expect("subscribe");
    nats.flush().await.expect("flush");
    let mut provider = stack.connect("p1", Role::Provider).await;
    for bad in ["a.b", "*", ">", "x y", "session.*.chat"] {
        provider
            .send(json!({"type": "chat_message", "session_id": bad, "message": "hi"}))
            .await;
        assert_eq!(provider.expect_error().await, "session not found");
        provider
            .send(json!({"type": "message_read", "message_id": bad}))
            .await;
        assert_eq!(provider.expect_error().await, "message not found");
        provider
            .send(json!({"type": "work_response", "work_id": bad, "accepted": true}))
            .await;
        assert!(provider.expect_error().await.contains("work_id"));
    }
    provider
        .send(json!({"type": "work_response", "work_id": 1.5, "accepted": true}))
        .await;
    assert!(provider.expect_error().await.contains("work_id"));
    // Only the gateway's own traffic (user events, the connect notice) was published. (Other
    // traffic never stops, the workers' heartbeats among it: read what came for a second.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, everything.next()).await {
        let subject = message.subject.as_str();
        assert!(
            !subject.starts_with("session.")
                && !subject.starts_with("message.")
                && !subject.starts_with("work."),
            "published on {subject}"
        );
    }
}

#[tokio::test]
async fn frames_appear_on_their_subjects_with_the_identity_headers() {
    let stack = gateway_only(&[]).await;
    let nats = stack.nats().await;
    let mut sessions = nats.subscribe("session.>").await.expect("subscribe");
    let mut works = nats.subscribe("work.>").await.expect("subscribe");
    nats.flush().await.expect("flush");
    let mut provider = stack.connect("p1", Role::Provider).await;
    let session = uuid::Uuid::new_v4();
    let frame = json!({"type": "location_update", "session_id": session, "latitude": 1.0, "longitude": 2.0});
    provider.send(frame.clone()).await;
    let traced = tokio::time::timeout(Duration::from_secs(5), sessions.next())
        .await
        .expect("traced")
        .expect("message");
    assert_eq!(
        traced.subject.as_str(),
        format!("session.{session}.location")
    );
    let payload: serde_json::Value = serde_json::from_slice(&traced.payload).expect("json");
    assert_eq!(payload, frame, "the frame travels unchanged");
    let headers = traced.headers.expect("headers");
    assert_eq!(headers.get("user-id").map(|v| v.as_str()), Some("p1"));
    assert_eq!(headers.get("role").map(|v| v.as_str()), Some("provider"));
    assert!(headers.get("conn-id").is_some());
    assert!(headers.get("trace-id").is_some());
    provider
        .send(json!({"type": "work_response", "work_id": 7, "accepted": false}))
        .await;
    let traced = tokio::time::timeout(Duration::from_secs(5), works.next())
        .await
        .expect("traced")
        .expect("message");
    assert_eq!(traced.subject.as_str(), "work.7.response");
    let headers = traced.headers.expect("headers");
    assert!(
        headers.get("Nats-Msg-Id").is_some(),
        "durable frames carry a de-duplication id"
    );
    assert_eq!(headers.get("user-id").map(|v| v.as_str()), Some("p1"));
}

#[tokio::test]
async fn a_frame_over_64_kib_gets_an_error_then_close_1009() {
    let stack = gateway_only(&[]).await;
    let mut socket = stack.connect("u1", Role::Seeker).await;
    let big = json!({"type": "chat_message", "session_id": uuid::Uuid::new_v4(), "message": "x".repeat(70 * 1024)});
    socket.send(big).await;
    let error = socket.expect("error").await;
    assert!(error["error"].as_str().expect("text").contains("too large"));
    assert_eq!(socket.expect_closed().await, 1009);
}

#[tokio::test]
async fn a_silent_socket_is_closed_as_idle() {
    let stack = gateway_only(&[("WS_PING_SECS", "1"), ("WS_IDLE_TIMEOUT_SECS", "2")]).await;
    let socket = stack.connect("u1", Role::Seeker).await;
    // Not reading means not answering pings: a dead phone. The gateway closes it after 2 s and
    // then waits up to 2 s for the closing handshake, so reading at 3 s sees the close frame.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut socket = socket;
    assert_eq!(socket.expect_closed().await, 1001);
    // A socket that answers pings (reads) stays open past the limit.
    let mut live = stack.connect("u2", Role::Seeker).await;
    live.expect_no("error", Duration::from_secs(3)).await;
    live.assert_usable().await;
}

#[tokio::test]
async fn health_stats_and_metrics_answer_without_a_token() {
    let stack = gateway_only(&[]).await;
    let mut seeker = stack.connect("u1", Role::Seeker).await;
    let mut provider = stack.connect("p1", Role::Provider).await;
    let mut provider_again = stack.connect("p1", Role::Provider).await;
    // A pong proves the gateway finished registering each socket (the upgrade answers earlier).
    for socket in [&mut seeker, &mut provider, &mut provider_again] {
        socket.assert_usable().await;
    }
    let http = stack.http();
    let health = http.get("/health", "").await.expect_status(200);
    assert_eq!(health.body["status"], "ok");
    assert_eq!(health.body["nats"], "connected");
    assert_eq!(health.body["connections"], 3);
    let stats = http
        .get("/api/websocket/stats", "")
        .await
        .expect_status(200);
    assert_eq!(stats.body["connections"], 3);
    assert_eq!(stats.body["users"], 2);
    assert_eq!(stats.body["by_role"]["seeker"], 1);
    assert_eq!(stats.body["by_role"]["provider"], 2);
    assert!(stats.body["frames_in"].as_u64().expect("frames_in") >= 1);
    assert!(stats.body["frames_out"].as_u64().expect("frames_out") >= 1);
    let metrics = http.get("/metrics", "").await.expect_status(200);
    let text = metrics.body.as_str().expect("text");
    assert!(text.contains("gateway_frames_in_total"), "{text}");
}

#[tokio::test]
async fn sockets_stay_open_while_nats_restarts_and_events_flow_again() {
    let mut stack = gateway_only(&[]).await;
    let mut seeker = stack.connect("u1", Role::Seeker).await;
    stack.restart_nats().await;
    seeker.assert_usable().await;
    // After the client reconnected and resubscribed, REST and events work again.
    let token = stack.token("u1", Role::Seeker);
    let mut ok = false;
    for _ in 0..50 {
        if stack.http().get("/api/seeker/search", &token).await.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "REST works again after the NATS restart");
    let health = stack.http().get("/health", "").await.expect_status(200);
    assert_eq!(health.body["nats"], "connected");
}

#[tokio::test]
async fn the_web_page_is_served_and_tokens_are_minted_only_in_development_mode() {
    let production = gateway_only(&[]).await;
    let page = reqwest::get(format!("http://{}/", production.gateway))
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.text()
            .await
            .expect("html")
            .to_lowercase()
            .contains("<!doctype html>")
    );
    let minted = production
        .http()
        .post("/dev/token", "", json!({"user_id": "u1", "role": "seeker"}))
        .await;
    assert!(
        minted.status == 404 || minted.status == 405,
        "no token minting: {}",
        minted.status
    );
    assert!(minted.body.get("token").is_none());

    let development = gateway_only(&[("GATEWAY_DEV_MODE", "1")]).await;
    let minted = development
        .http()
        .post(
            "/dev/token",
            "",
            json!({"user_id": "u1", "role": "provider", "name": "Demo"}),
        )
        .await
        .expect_status(200);
    let token = minted.body["token"].as_str().expect("token");
    let mut socket = Client::connect(&development.gateway, Role::Provider, token)
        .await
        .expect("the minted token works");
    socket.assert_usable().await;
    development
        .http()
        .post(
            "/dev/token",
            "",
            json!({"user_id": "a.b", "role": "seeker"}),
        )
        .await
        .expect_status(422);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_without_slowing_others() {
    let stack = gateway_only(&[("WS_OUTBOUND_QUEUE", "8"), ("WS_SEND_TIMEOUT_SECS", "1")]).await;
    let mut slow = stack.connect("slow", Role::Seeker).await;
    let mut other = stack.connect("other", Role::Seeker).await;
    let nats = stack.nats().await;
    let frame = json!({"type": "chat_message", "message": "x".repeat(8 * 1024)}).to_string();
    // Flood the slow user's events (as a worker would) while it reads nothing.
    let flood = {
        let nats = nats.clone();
        tokio::spawn(async move {
            for _ in 0..3000 {
                let _ = nats.publish("user.slow.events", frame.clone().into()).await;
            }
            let _ = nats.flush().await;
        })
    };
    let started = std::time::Instant::now();
    other.assert_usable().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "others are not slowed down"
    );
    let _ = flood.await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        slow.disconnected_within(Duration::from_secs(20)).await,
        "the slow client was disconnected"
    );
    other.assert_usable().await;
    let stats = stack
        .http()
        .get("/api/websocket/stats", "")
        .await
        .expect_status(200);
    assert_eq!(stats.body["connections"], 1);
}

#[tokio::test]
async fn a_token_name_with_a_line_break_or_over_100_characters_is_a_401_and_the_gateway_keeps_serving()
 {
    let stack = gateway_only(&[]).await;
    let http = stack.http();
    let long = "n".repeat(101);
    for name in ["Ann\r\nrole: provider", "Ann\nBob", long.as_str()] {
        let token = stack.token_named("u1", Role::Seeker, name);
        http.get("/api/me/profile", &token).await.expect_status(401);
        let refused = Client::connect(&stack.gateway, Role::Seeker, &token).await;
        assert_eq!(
            refused.err().map(|refused| refused.status),
            Some(401),
            "{name:?}"
        );
    }
    let mut socket = stack.connect("u1", Role::Seeker).await;
    socket.assert_usable().await;
    let stats = http
        .get("/api/websocket/stats", "")
        .await
        .expect_status(200);
    assert_eq!(stats.body["connections"], 1);
}

#[tokio::test]
async fn outside_development_mode_the_gateway_refuses_the_default_or_a_short_secret() {
    let stack = gateway_only(&[]).await;
    for secret in [shared::config::DEFAULT_JWT_SECRET, "short-secret"] {
        let output = std::process::Command::new(system_tests::stack::binary("gateway"))
            .env("NATS_URL", stack.nats_url())
            .env("GATEWAY_ADDR", "127.0.0.1:0")
            .env("GATEWAY_DEV_MODE", "0")
            .env("JWT_SECRET", secret)
            .output()
            .expect("gateway runs");
        assert!(!output.status.success(), "started with {secret:?}");
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(said.contains("JWT_SECRET"), "{said}");
    }
    // Development mode keeps working with the built-in secret (the local stack's demo tokens).
    let mut child = std::process::Command::new(system_tests::stack::binary("gateway"))
        .env("NATS_URL", stack.nats_url())
        .env("GATEWAY_ADDR", "127.0.0.1:0")
        .env("GATEWAY_DEV_MODE", "1")
        .env("JWT_SECRET", shared::config::DEFAULT_JWT_SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gateway runs");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "dev mode exited"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_gateway_stopped_with_sigterm_closes_every_socket_with_1012_after_publishing_what_it_read()
 {
    let mut stack = TestStack::with(StackOptions::default().only(&["lifecycle", "chat"])).await;
    let (mut seeker, mut provider, session_id, _) = stack.session("s1", "p1").await;
    // Many idle sockets, as a deploy finds them.
    let mut idle = Vec::new();
    for index in 0..1000 {
        let role = if index % 2 == 0 {
            Role::Seeker
        } else {
            Role::Provider
        };
        idle.push(stack.connect(&format!("idle{index}"), role).await);
    }
    // A frame read just before the signal is published, not dropped.
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "last words", "client_message_id": "c-last"}))
        .await;
    assert!(
        stack.terminate_gateway(Duration::from_secs(15)).await,
        "the gateway exited"
    );
    assert_eq!(seeker.expect_closed().await, 1012);
    assert_eq!(provider.expect_closed().await, 1012);
    let mut codes = std::collections::BTreeMap::new();
    for mut socket in idle {
        let code = if socket.disconnected_within(Duration::from_secs(5)).await {
            socket.closed_with.unwrap_or(1006)
        } else {
            0
        };
        *codes.entry(code).or_insert(0) += 1;
    }
    assert_eq!(codes, std::collections::BTreeMap::from([(1012, 1000)]));
    let stored = stack
        .count_until(
            "SELECT count(*) FROM chat_messages WHERE client_message_id = 'c-last'",
            1,
            Duration::from_secs(5),
        )
        .await;
    assert_eq!(
        stored, 1,
        "the frame read before the signal was published and applied"
    );
}

#[tokio::test]
async fn the_api_documents_are_served_and_the_openapi_document_names_every_rest_route() {
    let stack = gateway_only(&[]).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", stack.gateway);
    let openapi: serde_json::Value = client
        .get(format!("{base}/docs/openapi.json"))
        .send()
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("JSON");
    assert!(
        openapi["openapi"]
            .as_str()
            .expect("version")
            .starts_with("3.1")
    );
    let routes = [
        ("get", "/api/me/profile"),
        ("put", "/api/me/profile"),
        ("get", "/api/provider/status"),
        ("put", "/api/provider/status"),
        ("get", "/api/seeker/search"),
        ("put", "/api/seeker/search"),
        ("post", "/api/work-orders"),
        ("get", "/api/work-orders/{work_id}"),
        ("get", "/api/sessions/{session_id}"),
        ("get", "/api/sessions/{session_id}/messages"),
        ("post", "/api/sessions/{session_id}/read"),
        ("get", "/api/conversations"),
        ("post", "/api/sessions/{session_id}/dispute"),
        ("get", "/api/disputes"),
        ("get", "/api/disputes/{dispute_id}"),
        ("post", "/api/disputes/{dispute_id}/join"),
        ("post", "/api/disputes/{dispute_id}/resolve"),
    ];
    for (method, path) in routes {
        let operation = &openapi["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(operation["responses"]["401"].is_object(), "{method} {path}");
        assert!(operation["responses"]["429"].is_object(), "{method} {path}");
        // Every answer is a named schema, not an untyped object.
        let answer = ["200", "201"]
            .iter()
            .find_map(|status| operation["responses"][status].as_object())
            .unwrap_or_else(|| panic!("{method} {path} has no answer"));
        let reference = answer["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has an untyped answer"));
        let name = reference.trim_start_matches("#/components/schemas/");
        assert!(
            openapi["components"]["schemas"][name]["properties"].is_object(),
            "{method} {path}: {name} is not an object with properties"
        );
    }
    // The operators' routes, without a token, with typed answers.
    let operations = [("get", "/health"), ("get", "/api/websocket/stats")];
    for (method, path) in operations {
        let operation = &openapi["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(
            operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
                .is_string(),
            "{method} {path} has a typed answer"
        );
    }
    assert!(
        openapi["paths"]["/metrics"]["get"]["responses"]["200"]["content"]["text/plain"]
            .is_object(),
        "/metrics is documented as text"
    );
    let documented: usize = openapi["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|operations| operations.as_object().map_or(0, |o| o.len()))
        .sum();
    assert_eq!(
        documented,
        routes.len() + operations.len() + 1,
        "a documented route this test does not know"
    );
    let asyncapi = client
        .get(format!("{base}/docs/asyncapi.yaml"))
        .send()
        .await
        .expect("asyncapi.yaml")
        .text()
        .await
        .expect("text");
    assert!(asyncapi.contains("asyncapi: 3.0.0"));
    for address in [
        "/ws/work/seeker/",
        "/ws/chat/{conversation_id}/",
        "user.{user_id}.events",
    ] {
        assert!(asyncapi.contains(address), "{address}");
    }
    let index = client
        .get(format!("{base}/docs/"))
        .send()
        .await
        .expect("index");
    assert_eq!(index.status(), 200);
    assert!(index.text().await.expect("html").contains("openapi.json"));
}

#[tokio::test]
async fn a_user_with_sockets_on_two_gateways_gets_their_events_on_both_and_keeps_them_when_one_dies()
 {
    let stack =
        TestStack::with(StackOptions::default().only(&["lifecycle", "mediums", "chat"])).await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let second = stack.extra_gateway(&stack.nats_address()).await;
    let token = stack.token("prov1", Role::Provider);
    let mut provider_elsewhere = Client::connect(&second.address, Role::Provider, &token)
        .await
        .expect("a socket on the second gateway");
    provider_elsewhere.assert_usable().await;

    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "to both"}))
        .await;
    for socket in [&mut provider, &mut provider_elsewhere] {
        assert_eq!(socket.expect("chat_message").await["message"], "to both");
    }

    // The second gateway dies without a word; the first goes on delivering.
    drop(second);
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "still here"}))
        .await;
    assert_eq!(
        provider.expect("chat_message").await["message"],
        "still here"
    );
    // And a user who holds no socket on a gateway gets nothing there.
    let mut stranger = stack.connect("nobody", Role::Seeker).await;
    stranger
        .expect_no("chat_message", Duration::from_millis(500))
        .await;
}
