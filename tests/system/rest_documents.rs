//! Contract sections 3 and 11: the OpenAPI document says what every REST answer looks like. A real
//! session is walked through every route, as each of its participants, and every answer (the
//! errors included) is checked against the schema the document gives for its route and status,
//! so a field renamed, dropped or mistyped by a worker fails here. The fuzzer checks the same
//! on generated requests, but most of them never reach a session that exists.

use serde_json::{Value, json};
use shared::auth::Role;
use system_tests::{Reply, StackOptions, TestStack};

/// The document's schemas, and a check of an answer against the schema of its route and status.
struct Document {
    openapi: Value,
}

impl Document {
    async fn of(stack: &TestStack) -> Document {
        let openapi = stack.http().get("/docs/openapi.json", "").await.body;
        Document { openapi }
    }

    /// Asserts that `reply` is documented for `method path` and matches its schema; returns it.
    #[track_caller]
    fn check(&self, method: &str, path: &str, reply: Reply) -> Reply {
        let response = &self.openapi["paths"][path][method]["responses"][reply.status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} answered {} (undocumented): {}",
            reply.status,
            reply.body
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {}: no schema",
            reply.status
        );
        // The answer's schema, with the document's components beside it so its `$ref`s resolve.
        let root = json!({
            "$ref": schema["$ref"],
            "components": self.openapi["components"],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .expect("the document's schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(&reply.body)
            .map(|error| format!("{} at {}", error, error.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {}: the answer does not match its schema: {errors:?}\n{}",
            reply.status,
            reply.body
        );
        reply
    }
}

#[tokio::test]
async fn every_rest_answer_of_a_real_session_matches_the_openapi_document() {
    let stack =
        TestStack::with(StackOptions::default().only(&["lifecycle", "mediums", "chat"])).await;
    let document = Document::of(&stack).await;
    let http = stack.http();
    let (mut seeker, mut provider, session_id) = stack.active_session("doc-seek", "doc-prov").await;
    let seeker_token = stack.token("doc-seek", Role::Seeker);
    let provider_token = stack.token("doc-prov", Role::Provider);
    let mediator_token = stack.token("doc-mediator", Role::Mediator);

    // Profiles and statuses, before and after they are set.
    let profile = http.get("/api/me/profile", &seeker_token).await;
    document.check("get", "/api/me/profile", profile.expect_status(200));
    let stored = http
        .put(
            "/api/me/profile",
            &seeker_token,
            json!({"name": "Asha", "mobile": "9876543210"}),
        )
        .await;
    document.check("put", "/api/me/profile", stored.expect_status(200));
    let refused = http
        .put(
            "/api/me/profile",
            &seeker_token,
            json!({"name": "Asha", "mobile": "12"}),
        )
        .await;
    document.check("put", "/api/me/profile", refused.expect_status(422));
    let status = http.get("/api/provider/status", &provider_token).await;
    document.check("get", "/api/provider/status", status.expect_status(200));
    let status = http
        .put(
            "/api/provider/status",
            &provider_token,
            json!({"is_active": true}),
        )
        .await;
    document.check("put", "/api/provider/status", status.expect_status(200));
    let forbidden = http.get("/api/provider/status", &seeker_token).await;
    document.check("get", "/api/provider/status", forbidden.expect_status(403));
    let search = http.get("/api/seeker/search", &seeker_token).await;
    document.check("get", "/api/seeker/search", search.expect_status(200));
    let search = http
        .put(
            "/api/seeker/search",
            &seeker_token,
            json!({"is_searching": true, "latitude": 28.7, "longitude": 77.1}),
        )
        .await;
    document.check("put", "/api/seeker/search", search.expect_status(200));

    // A chat with a text and a location message, read by the provider.
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "On my way?"}))
        .await;
    seeker.expect("message_sent").await;
    provider
        .send(
            json!({"type": "chat_message", "session_id": session_id, "kind": "location",
                     "latitude": 28.71, "longitude": 77.11, "message": ""}),
        )
        .await;
    provider.expect("message_sent").await;
    let session_path = format!("/api/sessions/{session_id}");
    for token in [&seeker_token, &provider_token] {
        let snapshot = http.get(&session_path, token).await;
        document.check(
            "get",
            "/api/sessions/{session_id}",
            snapshot.expect_status(200),
        );
    }
    let unknown = http
        .get(
            "/api/sessions/00000000-0000-4000-8000-000000000000",
            &seeker_token,
        )
        .await;
    document.check(
        "get",
        "/api/sessions/{session_id}",
        unknown.expect_status(404),
    );
    let history = http
        .get(&format!("{session_path}/messages?limit=1"), &seeker_token)
        .await;
    let history = document.check(
        "get",
        "/api/sessions/{session_id}/messages",
        history.expect_status(200),
    );
    assert_eq!(history.body["has_more"], true);
    let history = http
        .get(&format!("{session_path}/messages"), &provider_token)
        .await;
    document.check(
        "get",
        "/api/sessions/{session_id}/messages",
        history.expect_status(200),
    );
    let read = http
        .post(
            &format!("{session_path}/read"),
            &provider_token,
            json!({"up_to_seq": 1}),
        )
        .await;
    document.check(
        "post",
        "/api/sessions/{session_id}/read",
        read.expect_status(200),
    );
    for token in [&seeker_token, &provider_token] {
        let inbox = http.get("/api/conversations", token).await;
        let inbox = document.check("get", "/api/conversations", inbox.expect_status(200));
        assert_eq!(
            inbox.body["conversations"].as_array().map(Vec::len),
            Some(1)
        );
    }
    let bad_cursor = http
        .get("/api/conversations?before=nonsense", &seeker_token)
        .await;
    document.check("get", "/api/conversations", bad_cursor.expect_status(422));

    // The work order behind the session, and a second one refused.
    let snapshot = stack.snapshot(&session_id, "doc-seek", Role::Seeker).await;
    let work_id = snapshot.body["work_id"].as_i64().expect("work_id");
    let order = http
        .get(&format!("/api/work-orders/{work_id}"), &provider_token)
        .await;
    document.check(
        "get",
        "/api/work-orders/{work_id}",
        order.expect_status(200),
    );
    let busy = http
        .post(
            "/api/work-orders",
            &seeker_token,
            json!({"provider_id": "doc-prov", "service_type": "Plumbing",
                   "latitude": 28.7, "longitude": 77.1}),
        )
        .await;
    document.check("post", "/api/work-orders", busy.expect_status(409));
    let other_seeker = stack.token("doc-seek-2", Role::Seeker);
    let created = http
        .post(
            "/api/work-orders",
            &other_seeker,
            json!({"provider_id": "doc-prov", "service_type": "Wiring",
                   "latitude": 28.7, "longitude": 77.1}),
        )
        .await;
    document.check("post", "/api/work-orders", created.expect_status(201));

    // A dispute from opening to resolution, as the parties and a mediator see it.
    let opened = http
        .post(
            &format!("{session_path}/dispute"),
            &seeker_token,
            json!({"reason": "Nobody came"}),
        )
        .await;
    let opened = document.check(
        "post",
        "/api/sessions/{session_id}/dispute",
        opened.expect_status(201),
    );
    let dispute_id = opened.body["dispute_id"].as_str().expect("dispute_id");
    let dispute_path = format!("/api/disputes/{dispute_id}");
    let listed = http.get("/api/disputes", &mediator_token).await;
    document.check("get", "/api/disputes", listed.expect_status(200));
    let joined = http
        .post(&format!("{dispute_path}/join"), &mediator_token, json!({}))
        .await;
    document.check(
        "post",
        "/api/disputes/{dispute_id}/join",
        joined.expect_status(200),
    );
    let snapshot = http.get(&session_path, &mediator_token).await;
    document.check(
        "get",
        "/api/sessions/{session_id}",
        snapshot.expect_status(200),
    );
    let again = http
        .post(
            &format!("{dispute_path}/join"),
            &stack.token("doc-mediator-2", Role::Mediator),
            json!({}),
        )
        .await;
    document.check(
        "post",
        "/api/disputes/{dispute_id}/join",
        again.expect_status(409),
    );
    let resolved = http
        .post(
            &format!("{dispute_path}/resolve"),
            &mediator_token,
            json!({"resolution": "Refunded"}),
        )
        .await;
    document.check(
        "post",
        "/api/disputes/{dispute_id}/resolve",
        resolved.expect_status(200),
    );
    for token in [&seeker_token, &provider_token] {
        let dispute = http.get(&dispute_path, token).await;
        document.check(
            "get",
            "/api/disputes/{dispute_id}",
            dispute.expect_status(200),
        );
    }
    let inbox = http.get("/api/conversations", &seeker_token).await;
    document.check("get", "/api/conversations", inbox.expect_status(200));
    let unauthenticated = http.get("/api/conversations", "").await;
    document.check(
        "get",
        "/api/conversations",
        unauthenticated.expect_status(401),
    );
}
