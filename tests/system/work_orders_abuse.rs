//! Contract section 12, "one user cannot hurt another", as far as work orders and the lifecycle
//! worker go: the caps on a seeker's pending orders (also under concurrent creation), the expiry
//! of orders nobody answers, the bounded replay to a provider who connects, a mediator who never
//! sees the parties' mediums, and free text with U+0000 refused naming its field (it used to be
//! a 503 "please retry", which no retry could fix).

use futures::future::join_all;
use serde_json::{Value, json};
use shared::auth::Role;
use std::time::Duration;
use system_tests::stack::Reply;
use system_tests::{Client, StackOptions, TestStack};

/// Longer than a work-order sweep period plus the lease's lateness, with room for a busy machine.
const EXPIRY_WAIT: Duration = Duration::from_secs(10);

async fn provider_ready(stack: &TestStack, provider: &str) {
    stack
        .http()
        .put(
            "/api/provider/status",
            &stack.token(provider, Role::Provider),
            json!({"is_active": true, "latitude": 28.70, "longitude": 77.10}),
        )
        .await
        .expect_status(200);
}

/// `POST /api/work-orders` from `seeker` to `provider`, as the seed's app sends it.
async fn create_order(stack: &TestStack, seeker: &str, provider: &str) -> Reply {
    stack
        .http()
        .post(
            "/api/work-orders",
            &stack.token(seeker, Role::Seeker),
            json!({"provider_id": provider, "service_type": "Plumbing", "message": "Leaking tap",
                   "latitude": 28.71, "longitude": 77.10}),
        )
        .await
}

async fn order(stack: &TestStack, seeker: &str, provider: &str) -> i64 {
    let created = create_order(stack, seeker, provider)
        .await
        .expect_status(201);
    created.body["work_id"].as_i64().expect("work_id")
}

#[track_caller]
fn assert_too_many(reply: Reply) {
    let reply = reply.expect_status(409);
    assert_eq!(reply.body, json!({"error": "too many pending work orders"}));
}

async fn pending_of(stack: &TestStack, seeker: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM work_orders WHERE seeker_id = $1 AND status = 'pending'",
    )
    .bind(seeker)
    .fetch_one(&stack.pool)
    .await
    .expect("count")
}

async fn work_order_status(stack: &TestStack, work_id: i64, seeker: &str) -> Value {
    stack
        .http()
        .get(
            &format!("/api/work-orders/{work_id}"),
            &stack.token(seeker, Role::Seeker),
        )
        .await
        .expect_status(200)
        .body["status"]
        .clone()
}

#[tokio::test]
async fn a_seeker_cannot_hold_more_than_five_pending_work_orders() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    for index in 1..=6 {
        provider_ready(&stack, &format!("prov{index}")).await;
    }
    for index in 1..=5 {
        order(&stack, "seek1", &format!("prov{index}")).await;
    }
    let mut sixth_provider = stack.connect("prov6", Role::Provider).await;
    assert_too_many(create_order(&stack, "seek1", "prov6").await);
    // Nothing changed: no sixth order, and the provider heard of none.
    assert_eq!(pending_of(&stack, "seek1").await, 5);
    assert_eq!(stack.count("SELECT count(*) FROM work_orders").await, 5);
    sixth_provider
        .expect_no("work_assigned", Duration::from_millis(500))
        .await;
    // The cap is the seeker's own: another seeker still reaches that provider.
    order(&stack, "seek2", "prov6").await;
    sixth_provider.expect("work_assigned").await;
}

#[tokio::test]
async fn a_seeker_cannot_hold_two_pending_work_orders_for_one_provider() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    provider_ready(&stack, "prov1").await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    let first = order(&stack, "seek1", "prov1").await;
    provider.expect("work_assigned").await;
    assert_too_many(create_order(&stack, "seek1", "prov1").await);
    assert_eq!(pending_of(&stack, "seek1").await, 1);
    provider
        .expect_no("work_assigned", Duration::from_millis(500))
        .await;
    // Once the order is answered it is no longer pending, and the seeker may ask again.
    provider
        .send(json!({"type": "work_response", "work_id": first, "accepted": false}))
        .await;
    // The seeker hears of it after the commit.
    assert_eq!(seeker.expect("work_response").await["work_id"], first);
    assert_eq!(work_order_status(&stack, first, "seek1").await, "rejected");
    order(&stack, "seek1", "prov1").await;
    provider.expect("work_assigned").await;
}

#[tokio::test]
async fn the_caps_hold_when_one_seeker_creates_work_orders_concurrently() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let providers: Vec<String> = (1..=10).map(|index| format!("prov{index}")).collect();
    for provider in &providers {
        provider_ready(&stack, provider).await;
    }
    // Ten at once, to ten providers: five places.
    let replies = join_all(
        providers
            .iter()
            .map(|provider| create_order(&stack, "seek1", provider)),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == 201).count(),
        5,
        "{statuses:?}"
    );
    for reply in replies.into_iter().filter(|reply| reply.status != 201) {
        assert_too_many(reply);
    }
    assert_eq!(pending_of(&stack, "seek1").await, 5);
    // Ten at once, to one provider: one place.
    let replies = join_all((0..10).map(|_| create_order(&stack, "seek2", "prov1"))).await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == 201).count(),
        1,
        "{statuses:?}"
    );
    for reply in replies.into_iter().filter(|reply| reply.status != 201) {
        assert_too_many(reply);
    }
    assert_eq!(pending_of(&stack, "seek2").await, 1);
}

#[tokio::test]
async fn a_pending_work_order_expires_and_both_parties_are_told() {
    let stack = TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat", "expiry"])
            .env("WORK_ORDER_TTL_SECS", "2")
            // One place in all, so the expired order's place is the only one there is.
            .env("WORK_ORDER_MAX_PENDING", "1"),
    )
    .await;
    provider_ready(&stack, "prov1").await;
    provider_ready(&stack, "prov2").await;
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
    // The knob holds: one pending order in all.
    assert_too_many(create_order(&stack, "seek1", "prov2").await);

    let rejection = seeker
        .find("work_response", EXPIRY_WAIT)
        .await
        .expect("the seeker hears the order expired");
    assert_eq!(rejection["work_id"], work_id);
    assert_eq!(rejection["accepted"], false);
    assert_eq!(rejection["reason"], "expired");
    // The seed's rejection fields, as a provider's `accepted: false` gives them.
    assert_eq!(rejection["provider_name"], "Ravi");
    assert_eq!(rejection["provider_mobile"], "9876543210");
    assert_eq!(rejection["service_type"], "Plumbing");
    assert!(
        rejection["response_time"]
            .as_str()
            .expect("response_time")
            .ends_with('Z')
    );
    let expired = provider
        .find("work_expired", EXPIRY_WAIT)
        .await
        .expect("the provider hears the order expired");
    assert_eq!(expired, json!({"type": "work_expired", "work_id": work_id}));
    assert_eq!(work_order_status(&stack, work_id, "seek1").await, "expired");
    // Exactly once: the next sweeps leave it alone.
    seeker
        .expect_no("work_response", Duration::from_millis(2500))
        .await;
    provider
        .expect_no("work_expired", Duration::from_millis(100))
        .await;

    // Too late to answer: refused, and no session.
    provider
        .send(json!({"type": "work_response", "work_id": work_id, "accepted": true}))
        .await;
    let refused = provider.expect("error").await;
    assert_eq!(
        refused["error"],
        "work order is not pending (it is expired)"
    );
    assert_eq!(refused["request_type"], "work_response");
    seeker
        .expect_no("work_accepted", Duration::from_millis(300))
        .await;
    assert_eq!(stack.count("SELECT count(*) FROM work_sessions").await, 0);
    assert_eq!(work_order_status(&stack, work_id, "seek1").await, "expired");

    // Its places under both caps (this provider's, and the only one in all) are free again.
    let again = order(&stack, "seek1", "prov1").await;
    provider.expect("work_assigned").await;
    assert_ne!(again, work_id);
}

#[tokio::test]
async fn a_provider_gets_at_most_the_twenty_newest_pending_orders_on_connect() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    provider_ready(&stack, "prov1").await;
    // 25 seekers write while the provider is offline, one after the other.
    let mut work_ids = Vec::new();
    for index in 1..=25 {
        work_ids.push(order(&stack, &format!("seek{index:02}"), "prov1").await);
    }
    let mut provider = stack.connect("prov1", Role::Provider).await;
    let mut replayed = Vec::new();
    while let Some(assigned) = provider.find("work_assigned", Duration::from_secs(2)).await {
        replayed.push(assigned["work_id"].as_i64().expect("work_id"));
    }
    // The 20 newest, oldest first among them.
    assert_eq!(replayed, work_ids[5..].to_vec());
    // The older five are still pending, for the provider to find otherwise; nothing was dropped.
    assert_eq!(
        stack
            .count("SELECT count(*) FROM work_orders WHERE status = 'pending'")
            .await,
        25
    );
}

/// Waits for the provider's own `mediums_shared` (the share was applied).
async fn share_mediums(provider: &mut Client, session_id: &str) {
    provider
        .send(json!({"type": "medium_share", "session_id": session_id,
                     "mediums": {"whatsapp": "9876543210"}}))
        .await;
    provider.expect("mediums_shared").await;
}

#[tokio::test]
async fn a_mediator_never_sees_the_parties_mediums() {
    let stack =
        TestStack::with(StackOptions::default().only(&["lifecycle", "mediums", "chat"])).await;
    let (_seeker, mut provider, session_id) = stack.active_session("seek1", "prov1").await;
    share_mediums(&mut provider, &session_id).await;
    let http = stack.http();
    let opened = http
        .post(
            &format!("/api/sessions/{session_id}/dispute"),
            &stack.token("seek1", Role::Seeker),
            json!({"reason": "The work was not done"}),
        )
        .await
        .expect_status(201);
    let dispute_id = opened.body["dispute_id"].as_str().expect("dispute_id");
    http.post(
        &format!("/api/disputes/{dispute_id}/join"),
        &stack.token("med1", Role::Mediator),
        json!({}),
    )
    .await
    .expect_status(200);

    let mediator = stack.snapshot(&session_id, "med1", Role::Mediator).await;
    assert!(
        mediator.body["seeker_mediums"].is_null(),
        "{}",
        mediator.body
    );
    assert!(
        mediator.body["provider_mediums"].is_null(),
        "{}",
        mediator.body
    );
    assert_eq!(mediator.body["connection_state"], "active");
    assert!(!mediator.body.to_string().contains("9123456789"));
    assert!(!mediator.body.to_string().contains("9876543210"));
    // The parties see them as before.
    for (user, role) in [("seek1", Role::Seeker), ("prov1", Role::Provider)] {
        let party = stack.snapshot(&session_id, user, role).await;
        assert_eq!(party.body["seeker_mediums"], json!({"call": "9123456789"}));
        assert_eq!(
            party.body["provider_mediums"],
            json!({"whatsapp": "9876543210"})
        );
    }
}

#[tokio::test]
async fn a_nul_in_a_work_order_or_profile_is_a_400_naming_the_field() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    provider_ready(&stack, "prov1").await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    let http = stack.http();
    let seeker_token = stack.token("seek1", Role::Seeker);
    let orders = [
        (
            json!({"provider_id": "prov1", "service_type": "Plumbing", "message": "Leaking\u{0}tap",
                   "latitude": 28.71, "longitude": 77.10}),
            "message must not contain U+0000",
        ),
        (
            json!({"provider_id": "prov1", "service_type": "Plumb\u{0}ing",
                   "latitude": 28.71, "longitude": 77.10}),
            "service_type must not contain U+0000",
        ),
    ];
    for (body, error) in orders {
        let refused = http
            .post("/api/work-orders", &seeker_token, body)
            .await
            .expect_status(400);
        assert_eq!(refused.body, json!({ "error": error }));
    }
    assert_eq!(stack.count("SELECT count(*) FROM work_orders").await, 0);
    provider
        .expect_no("work_assigned", Duration::from_millis(300))
        .await;

    let stored = json!({"name": "Asha", "mobile": "9123456789", "profile_pic": null});
    http.put("/api/me/profile", &seeker_token, stored.clone())
        .await
        .expect_status(200);
    let profiles = [
        (
            json!({"name": "As\u{0}ha", "mobile": "9123456789"}),
            "name must not contain U+0000",
        ),
        (
            json!({"name": "Asha", "mobile": "9123456789", "profile_pic": "https://p/\u{0}"}),
            "profile_pic must not contain U+0000",
        ),
    ];
    for (body, error) in profiles {
        let refused = http
            .put("/api/me/profile", &seeker_token, body)
            .await
            .expect_status(400);
        assert_eq!(refused.body, json!({ "error": error }));
    }
    let profile = http
        .get("/api/me/profile", &seeker_token)
        .await
        .expect_status(200);
    assert_eq!(profile.body, stored);
}

#[tokio::test]
async fn a_nul_in_a_rating_description_is_refused_naming_the_field() {
    let stack = TestStack::with(StackOptions::default().only(&["lifecycle"])).await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    seeker
        .send(json!({"type": "finish_service", "session_id": session_id,
                     "rating_stars": 5, "rating_description": "Great\u{0}work"}))
        .await;
    let refused = seeker.expect("error").await;
    assert_eq!(
        refused["error"],
        "rating_description must not contain U+0000"
    );
    assert_eq!(refused["request_type"], "finish_service");
    assert_eq!(refused["session_id"], session_id.as_str());
    // Nothing changed: the session goes on, and a clean finish still works.
    provider
        .expect_no("service_finished", Duration::from_millis(300))
        .await;
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["connection_state"], "waiting");
    assert!(snapshot.body["rating_description"].is_null());
    seeker
        .send(json!({"type": "finish_service", "session_id": session_id,
                     "rating_stars": 5, "rating_description": "Great work"}))
        .await;
    seeker.expect("service_finished").await;
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["rating_description"], "Great work");
    assert!(stack.dead_letters().await.is_empty());
}
