//! Work orders, accept/reject, cancel and finish, as the contract and the seed describe them.

use serde_json::json;
use shared::auth::Role;
use std::time::Duration;
use system_tests::{StackOptions, TestStack};

async fn lifecycle_stack() -> TestStack {
    TestStack::with(StackOptions::default().only(&["lifecycle"])).await
}

async fn provider_ready(stack: &TestStack, provider: &str) {
    let token = stack.token(provider, Role::Provider);
    stack
        .http()
        .put(
            "/api/provider/status",
            &token,
            json!({"is_active": true, "latitude": 28.70, "longitude": 77.10}),
        )
        .await
        .expect_status(200);
}

async fn order(stack: &TestStack, seeker: &str, provider: &str) -> i64 {
    let reply = stack
        .http()
        .post(
            "/api/work-orders",
            &stack.token(seeker, Role::Seeker),
            json!({"provider_id": provider, "service_type": "Plumbing", "message": "Leaking tap", "latitude": 28.71, "longitude": 77.10}),
        )
        .await
        .expect_status(201);
    assert_eq!(reply.body["status"], "pending");
    reply.body["work_id"].as_i64().expect("work_id")
}

#[tokio::test]
async fn a_work_order_reaches_the_provider_as_work_assigned() {
    let stack = lifecycle_stack().await;
    provider_ready(&stack, "prov1").await;
    let seeker_token = stack.token_named("seek1", Role::Seeker, "Token Name");
    stack
        .http()
        .put(
            "/api/me/profile",
            &seeker_token,
            json!({"name": "Asha", "mobile": "9123456789"}),
        )
        .await
        .expect_status(200);
    let mut provider = stack.connect("prov1", Role::Provider).await;
    let work_id = order(&stack, "seek1", "prov1").await;
    let assigned = provider.expect("work_assigned").await;
    assert_eq!(assigned["work_id"], work_id);
    assert_eq!(assigned["seeker_name"], "Asha");
    assert_eq!(assigned["seeker_mobile"], "9123456789");
    assert_eq!(assigned["service_type"], "Plumbing");
    assert_eq!(assigned["message"], "Leaking tap");
    assert_eq!(assigned["distance"], "1.1 km");
    assert!(assigned["seeker_profile_pic"].is_null());
    assert!(
        assigned["timestamp"]
            .as_str()
            .expect("timestamp")
            .ends_with('Z')
    );
    let fetched = stack
        .http()
        .get(
            &format!("/api/work-orders/{work_id}"),
            &stack.token("prov1", Role::Provider),
        )
        .await
        .expect_status(200);
    assert_eq!(fetched.body["status"], "pending");
    assert!(fetched.body["session_id"].is_null());
}

#[tokio::test]
async fn seeker_name_falls_back_to_the_token_name() {
    let stack = lifecycle_stack().await;
    provider_ready(&stack, "prov1").await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    stack
        .http()
        .post(
            "/api/work-orders",
            &stack.token_named("seek1", Role::Seeker, "From Token"),
            json!({"provider_id": "prov1", "service_type": "Plumbing", "latitude": 28.7, "longitude": 77.1}),
        )
        .await
        .expect_status(201);
    let assigned = provider.expect("work_assigned").await;
    assert_eq!(assigned["seeker_name"], "From Token");
    assert!(assigned["seeker_mobile"].is_null());
    assert_eq!(assigned["distance"], "0.0 km");
}

#[tokio::test]
async fn rejecting_a_work_order_tells_the_seeker() {
    let stack = lifecycle_stack().await;
    provider_ready(&stack, "prov1").await;
    stack
        .http()
        .put(
            "/api/me/profile",
            &stack.token("prov1", Role::Provider),
            json!({"name": "Ravi", "mobile": "9876543210"}),
        )
        .await
        .expect_status(200);
    let mut provider = stack.connect("prov1", Role::Provider).await;
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    let work_id = order(&stack, "seek1", "prov1").await;
    provider.expect("work_assigned").await;
    provider
        .send(json!({"type": "work_response", "work_id": work_id, "accepted": false}))
        .await;
    let response = seeker.expect("work_response").await;
    assert_eq!(response["work_id"], work_id);
    assert_eq!(response["accepted"], false);
    assert_eq!(response["provider_name"], "Ravi");
    assert_eq!(response["provider_mobile"], "9876543210");
    assert_eq!(response["service_type"], "Plumbing");
    let fetched = stack
        .http()
        .get(
            &format!("/api/work-orders/{work_id}"),
            &stack.token("seek1", Role::Seeker),
        )
        .await
        .expect_status(200);
    assert_eq!(fetched.body["status"], "rejected");
    // The provider stays active after a rejection.
    let status = stack
        .http()
        .get(
            "/api/provider/status",
            &stack.token("prov1", Role::Provider),
        )
        .await
        .expect_status(200);
    assert_eq!(status.body["is_active"], true);
}

#[tokio::test]
async fn accepting_creates_a_waiting_session_and_turns_both_statuses_off() {
    let stack = lifecycle_stack().await;
    let seeker_token = stack.token("seek1", Role::Seeker);
    stack
        .http()
        .put(
            "/api/seeker/search",
            &seeker_token,
            json!({"is_searching": true}),
        )
        .await
        .expect_status(200);
    let (_seeker, _provider, session_id, work_id) = stack.session("seek1", "prov1").await;
    let order = stack
        .http()
        .get(&format!("/api/work-orders/{work_id}"), &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(order.body["status"], "accepted");
    assert_eq!(order.body["session_id"], session_id.as_str());
    let snapshot = stack
        .http()
        .get(&format!("/api/sessions/{session_id}"), &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(snapshot.body["connection_state"], "waiting");
    assert_eq!(snapshot.body["work_id"], work_id);
    let status = stack
        .http()
        .get(
            "/api/provider/status",
            &stack.token("prov1", Role::Provider),
        )
        .await
        .expect_status(200);
    assert_eq!(status.body["is_active"], false);
    let search = stack
        .http()
        .get("/api/seeker/search", &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(search.body["is_searching"], false);
}

#[tokio::test]
async fn cancelling_tells_both_closes_their_sockets_and_restores_statuses() {
    let stack = lifecycle_stack().await;
    let (mut seeker, mut provider, session_id, work_id) = stack.session("seek1", "prov1").await;
    seeker
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    let own = seeker.expect("connection_cancelled").await;
    assert_eq!(own["message"], "Connection cancelled successfully");
    let other = provider.expect("connection_cancelled").await;
    assert_eq!(other["cancelled_by"], "seeker");
    assert_eq!(other["message"], "Seeker cancelled the connection");
    assert_eq!(seeker.expect_closed().await, 1000);
    assert_eq!(provider.expect_closed().await, 1000);
    let seeker_token = stack.token("seek1", Role::Seeker);
    let order = stack
        .http()
        .get(&format!("/api/work-orders/{work_id}"), &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(order.body["status"], "cancelled");
    let snapshot = stack
        .http()
        .get(&format!("/api/sessions/{session_id}"), &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(snapshot.body["connection_state"], "cancelled");
    assert_eq!(snapshot.body["cancelled_by"], "seeker");
    let status = stack
        .http()
        .get(
            "/api/provider/status",
            &stack.token("prov1", Role::Provider),
        )
        .await
        .expect_status(200);
    assert_eq!(status.body["is_active"], true);
    let search = stack
        .http()
        .get("/api/seeker/search", &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(search.body["is_searching"], true);
}

#[tokio::test]
async fn a_second_cancel_or_finish_is_refused_as_already_ended() {
    let stack = lifecycle_stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    provider.expect("connection_cancelled").await;
    seeker.expect("connection_cancelled").await;
    seeker.expect_closed().await;
    let mut again = stack.connect("seek1", Role::Seeker).await;
    again
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    assert_eq!(again.expect_error().await, "session already ended");
    again
        .send(json!({"type": "finish_service", "session_id": session_id, "rating_stars": 5}))
        .await;
    assert_eq!(again.expect_error().await, "session already ended");
    again.assert_usable().await;
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["connection_state"], "cancelled");
    assert!(snapshot.body["rating_stars"].is_null());
}

#[tokio::test]
async fn finishing_with_a_rating_keeps_it_private_to_the_seeker() {
    let stack = lifecycle_stack().await;
    let (mut seeker, mut provider, session_id, work_id) = stack.session("seek1", "prov1").await;
    seeker
        .send(json!({"type": "finish_service", "session_id": session_id, "rating_stars": 5, "rating_description": "Excellent"}))
        .await;
    let own = seeker.expect("service_finished").await;
    assert_eq!(own["message"], "Service marked as finished successfully");
    let other = provider.expect("service_finished").await;
    assert_eq!(other["finished_by"], "seeker");
    assert_eq!(other["message"], "Seeker marked the service as finished");
    assert_eq!(seeker.expect_closed().await, 1000);
    assert_eq!(provider.expect_closed().await, 1000);
    let seeker_token = stack.token("seek1", Role::Seeker);
    let provider_token = stack.token("prov1", Role::Provider);
    let seeker_view = stack
        .http()
        .get(&format!("/api/sessions/{session_id}"), &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(seeker_view.body["connection_state"], "completed");
    assert_eq!(seeker_view.body["completed_by"], "seeker");
    assert_eq!(seeker_view.body["rating_stars"], 5);
    assert_eq!(seeker_view.body["rating_description"], "Excellent");
    let provider_view = stack
        .http()
        .get(&format!("/api/sessions/{session_id}"), &provider_token)
        .await
        .expect_status(200);
    assert!(provider_view.body.get("rating_stars").is_none());
    assert!(provider_view.body.get("rating_description").is_none());
    let order = stack
        .http()
        .get(&format!("/api/work-orders/{work_id}"), &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(order.body["status"], "completed");
    // Unlike a cancel, finishing leaves the statuses off.
    let status = stack
        .http()
        .get("/api/provider/status", &provider_token)
        .await
        .expect_status(200);
    assert_eq!(status.body["is_active"], false);
    let search = stack
        .http()
        .get("/api/seeker/search", &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(search.body["is_searching"], false);
}

#[tokio::test]
async fn a_provider_can_finish_without_a_rating_and_cannot_set_one() {
    let stack = lifecycle_stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider
        .send(json!({"type": "finish_service", "session_id": session_id, "rating_stars": 1, "rating_description": "self-rated"}))
        .await;
    provider.expect("service_finished").await;
    let other = seeker.expect("service_finished").await;
    assert_eq!(other["finished_by"], "provider");
    assert_eq!(other["message"], "Provider marked the service as finished");
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["completed_by"], "provider");
    assert!(snapshot.body["rating_stars"].is_null());
    assert!(snapshot.body["rating_description"].is_null());
}

#[tokio::test]
async fn a_rating_outside_one_to_five_is_refused_and_changes_nothing() {
    let stack = lifecycle_stack().await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    for stars in [json!(0), json!(6), json!("five"), json!(2.5)] {
        seeker
            .send(
                json!({"type": "finish_service", "session_id": session_id, "rating_stars": stars}),
            )
            .await;
        let error = seeker.expect("error").await;
        assert_eq!(
            error["error"],
            "rating_stars must be an integer from 1 to 5"
        );
        assert_eq!(error["request_type"], "finish_service");
    }
    seeker.assert_usable().await;
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["connection_state"], "waiting");
}

#[tokio::test]
async fn work_order_creation_refuses_unknown_inactive_and_busy() {
    let stack = lifecycle_stack().await;
    let http = stack.http();
    let seeker_token = stack.token("seek1", Role::Seeker);
    let body = |provider: &str| json!({"provider_id": provider, "service_type": "Plumbing", "latitude": 28.7, "longitude": 77.1});
    http.post("/api/work-orders", &seeker_token, body("nobody"))
        .await
        .expect_status(404);
    http.get("/api/provider/status", &stack.token("idle", Role::Provider))
        .await
        .expect_status(200);
    http.post("/api/work-orders", &seeker_token, body("idle"))
        .await
        .expect_status(409);
    http.post(
        "/api/work-orders",
        &seeker_token,
        json!({"provider_id": "idle"}),
    )
    .await
    .expect_status(422);
    http.post(
        "/api/work-orders",
        &seeker_token,
        json!({"provider_id": "idle", "service_type": "x", "latitude": 95.0, "longitude": 0.0}),
    )
    .await
    .expect_status(422);
    let (_seeker, _provider, _session, _) = stack.session("seek1", "prov1").await;
    provider_ready(&stack, "prov2").await;
    let busy = http
        .post("/api/work-orders", &seeker_token, body("prov2"))
        .await
        .expect_status(409);
    assert!(
        busy.body["error"]
            .as_str()
            .expect("error")
            .contains("session")
    );
    assert_eq!(stack.count("SELECT count(*) FROM work_orders").await, 1);
}

#[tokio::test]
async fn only_the_addressed_provider_answers_and_only_while_pending() {
    let stack = lifecycle_stack().await;
    provider_ready(&stack, "prov1").await;
    let mut intruder = stack.connect("prov2", Role::Provider).await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    let work_id = order(&stack, "seek1", "prov1").await;
    intruder
        .send(json!({"type": "work_response", "work_id": work_id, "accepted": true}))
        .await;
    assert_eq!(intruder.expect_error().await, "work order not found");
    intruder
        .send(json!({"type": "work_response", "work_id": 999999, "accepted": true}))
        .await;
    assert_eq!(intruder.expect_error().await, "work order not found");
    provider
        .send(json!({"type": "work_response", "work_id": work_id, "accepted": "yes"}))
        .await;
    assert_eq!(
        provider.expect_error().await,
        "accepted must be true or false"
    );
    provider
        .send(json!({"type": "work_response", "work_id": work_id, "accepted": false}))
        .await;
    provider
        .send(json!({"type": "work_response", "work_id": work_id, "accepted": true}))
        .await;
    let error = provider.expect_error().await;
    assert!(error.contains("not pending"), "{error}");
    assert_eq!(stack.count("SELECT count(*) FROM work_sessions").await, 0);
}

#[tokio::test]
async fn a_provider_who_connects_gets_pending_orders_again() {
    let stack = lifecycle_stack().await;
    provider_ready(&stack, "prov1").await;
    let first = order(&stack, "seek1", "prov1").await;
    let second = order(&stack, "seek2", "prov1").await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    assert_eq!(provider.expect("work_assigned").await["work_id"], first);
    assert_eq!(provider.expect("work_assigned").await["work_id"], second);
    provider
        .send(json!({"type": "work_response", "work_id": first, "accepted": false}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut later = stack.connect("prov1", Role::Provider).await;
    assert_eq!(later.expect("work_assigned").await["work_id"], second);
    later
        .expect_no("work_assigned", Duration::from_millis(500))
        .await;
}

#[tokio::test]
async fn a_user_with_two_sockets_gets_every_event_on_both() {
    let stack = lifecycle_stack().await;
    provider_ready(&stack, "prov1").await;
    let mut phone = stack.connect("prov1", Role::Provider).await;
    let mut browser = stack.connect("prov1", Role::Provider).await;
    let mut seeker_phone = stack.connect("seek1", Role::Seeker).await;
    let mut seeker_browser = stack.connect("seek1", Role::Seeker).await;
    let work_id = order(&stack, "seek1", "prov1").await;
    phone.expect("work_assigned").await;
    browser.expect("work_assigned").await;
    phone
        .send(json!({"type": "work_response", "work_id": work_id, "accepted": true}))
        .await;
    let session_id = phone.expect("work_accepted").await["session_id"].clone();
    assert_eq!(
        browser.expect("work_accepted").await["session_id"],
        session_id
    );
    assert_eq!(
        seeker_phone.expect("work_accepted").await["session_id"],
        session_id
    );
    assert_eq!(
        seeker_browser.expect("work_accepted").await["session_id"],
        session_id
    );
    seeker_browser
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    for socket in [
        &mut phone,
        &mut browser,
        &mut seeker_phone,
        &mut seeker_browser,
    ] {
        socket.expect("connection_cancelled").await;
        assert_eq!(socket.expect_closed().await, 1000);
    }
}

#[tokio::test]
async fn two_racing_accepts_create_one_session() {
    let stack = lifecycle_stack().await;
    provider_ready(&stack, "prov1").await;
    let mut phone = stack.connect("prov1", Role::Provider).await;
    let mut browser = stack.connect("prov1", Role::Provider).await;
    let work_id = order(&stack, "seek1", "prov1").await;
    let accept = json!({"type": "work_response", "work_id": work_id, "accepted": true});
    tokio::join!(phone.send(accept.clone()), browser.send(accept));
    // Exactly one of the two sockets is refused; both see the one session.
    let refused_phone = phone.find("error", Duration::from_secs(2)).await;
    let refused_browser = browser.find("error", Duration::from_millis(500)).await;
    assert!(
        refused_phone.is_some() != refused_browser.is_some(),
        "{refused_phone:?} {refused_browser:?}"
    );
    let session = phone.expect("work_accepted").await["session_id"].clone();
    assert_eq!(browser.expect("work_accepted").await["session_id"], session);
    phone
        .expect_no("work_accepted", Duration::from_millis(300))
        .await;
    assert_eq!(stack.count("SELECT count(*) FROM work_sessions").await, 1);
}

#[tokio::test]
async fn two_lifecycle_instances_handle_each_frame_once() {
    // Ten pending orders of one seeker: above the default cap (contract section 12).
    let mut stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle"])
            .env("WORK_ORDER_MAX_PENDING", "10"),
    )
    .await;
    stack.start_worker("lifecycle");
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    let mut orders = Vec::new();
    for index in 0..10 {
        let provider = format!("prov{index}");
        provider_ready(&stack, &provider).await;
        orders.push((provider.clone(), order(&stack, "seek1", &provider).await));
    }
    for (provider, work_id) in &orders {
        let mut socket = stack.connect(provider, Role::Provider).await;
        socket.expect("work_assigned").await;
        socket
            .send(json!({"type": "work_response", "work_id": work_id, "accepted": false}))
            .await;
        socket.expect_no("error", Duration::from_millis(50)).await;
    }
    let mut answered = Vec::new();
    for _ in 0..orders.len() {
        answered.push(
            seeker.expect("work_response").await["work_id"]
                .as_i64()
                .expect("id"),
        );
    }
    seeker
        .expect_no("work_response", Duration::from_millis(500))
        .await;
    answered.sort();
    let mut expected: Vec<i64> = orders.iter().map(|(_, id)| *id).collect();
    expected.sort();
    assert_eq!(answered, expected);
    assert_eq!(
        stack
            .count("SELECT count(*) FROM work_orders WHERE status = 'rejected'")
            .await,
        10
    );
}

#[tokio::test]
async fn frames_sent_while_the_lifecycle_worker_is_down_are_handled_when_it_starts() {
    let mut stack = lifecycle_stack().await;
    provider_ready(&stack, "prov1").await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    let work_id = order(&stack, "seek1", "prov1").await;
    provider.expect("work_assigned").await;
    stack.kill_workers("lifecycle");
    provider
        .send(json!({"type": "work_response", "work_id": work_id, "accepted": true}))
        .await;
    seeker
        .expect_no("work_accepted", Duration::from_millis(500))
        .await;
    stack.start_worker("lifecycle");
    let accepted = seeker.expect("work_accepted").await;
    assert_eq!(accepted["work_id"], work_id);
    provider.expect("work_accepted").await;
    assert_eq!(stack.count("SELECT count(*) FROM work_sessions").await, 1);
}

#[tokio::test]
async fn the_first_call_creates_the_user_so_their_profile_reads_empty_not_404() {
    let stack = lifecycle_stack().await;
    let named = stack.token_named("fresh1", Role::Seeker, "Token Name");
    let profile = stack
        .http()
        .get("/api/me/profile", &named)
        .await
        .expect_status(200);
    assert_eq!(profile.body["name"], "Token Name");
    assert!(profile.body["mobile"].is_null());
    assert!(profile.body["profile_pic"].is_null());
    let unnamed = stack.token("fresh2", Role::Provider);
    let profile = stack
        .http()
        .get("/api/me/profile", &unnamed)
        .await
        .expect_status(200);
    assert!(profile.body["name"].is_null());
    assert_eq!(
        stack
            .count("SELECT count(*) FROM users WHERE user_id IN ('fresh1', 'fresh2')")
            .await,
        2
    );
}

#[tokio::test]
async fn two_providers_accepting_two_orders_of_one_seeker_at_once_put_the_seeker_in_one_session() {
    let mut stack = lifecycle_stack().await;
    // Two instances: the two accepts may be applied in two transactions at the same moment.
    stack.start_worker("lifecycle");
    for round in 0..6 {
        let seeker = format!("seek{round}");
        let (first, second) = (format!("provA{round}"), format!("provB{round}"));
        provider_ready(&stack, &first).await;
        provider_ready(&stack, &second).await;
        let mut first_socket = stack.connect(&first, Role::Provider).await;
        let mut second_socket = stack.connect(&second, Role::Provider).await;
        let first_order = order(&stack, &seeker, &first).await;
        let second_order = order(&stack, &seeker, &second).await;
        first_socket.expect("work_assigned").await;
        second_socket.expect("work_assigned").await;
        tokio::join!(
            first_socket
                .send(json!({"type": "work_response", "work_id": first_order, "accepted": true})),
            second_socket
                .send(json!({"type": "work_response", "work_id": second_order, "accepted": true}))
        );
        let first_refused = first_socket
            .find("error", Duration::from_millis(1500))
            .await;
        let second_refused = second_socket
            .find("error", Duration::from_millis(500))
            .await;
        assert!(
            first_refused.is_some() != second_refused.is_some(),
            "round {round}: exactly one accept is refused: {first_refused:?} {second_refused:?}"
        );
        let refused = first_refused.or(second_refused).expect("one refusal");
        assert_eq!(refused["error"], "the seeker is already in another session");
    }
    assert_eq!(
        stack
            .count(
                "SELECT count(*) FROM (SELECT seeker_id FROM work_sessions
                 WHERE connection_state IN ('waiting', 'active')
                 GROUP BY seeker_id HAVING count(*) > 1) doubled"
            )
            .await,
        0
    );
    assert_eq!(stack.count("SELECT count(*) FROM work_sessions").await, 6);
}
