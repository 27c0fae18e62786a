//! Medium selection and sharing (contract section 4 "Mediums").

use serde_json::json;
use shared::auth::Role;
use system_tests::{StackOptions, TestStack};

async fn stack() -> TestStack {
    TestStack::with(StackOptions::default().only(&["lifecycle", "mediums"])).await
}

const INVALID: &str = "Invalid mediums. Select 0-3 from: telegram, whatsapp, call";

#[tokio::test]
async fn selecting_mediums_activates_the_session_and_tells_the_provider() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let mediums = json!({"telegram": "9123456789", "whatsapp": "9123456789"});
    seeker
        .send(json!({"type": "medium_selection", "session_id": session_id, "mediums": mediums}))
        .await;
    let selected = seeker.expect("mediums_selected").await;
    assert_eq!(selected["mediums"], mediums);
    assert_eq!(selected["connection_state"], "active");
    assert_eq!(selected["session_id"], session_id.as_str());
    let told = provider.expect("seeker_mediums_selected").await;
    assert_eq!(told["mediums"], mediums);
    assert_eq!(told["connection_state"], "active");
    assert_eq!(told["message"], "Seeker has selected communication mediums");
    let snapshot = stack.snapshot(&session_id, "prov1", Role::Provider).await;
    assert_eq!(snapshot.body["connection_state"], "active");
    assert_eq!(snapshot.body["seeker_mediums"], mediums);
}

#[tokio::test]
async fn a_selection_can_be_changed_and_may_be_empty() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    seeker
        .send(json!({"type": "medium_selection", "session_id": session_id, "mediums": {}}))
        .await;
    assert_eq!(
        seeker.expect("mediums_selected").await["connection_state"],
        "active"
    );
    assert_eq!(
        provider.expect("seeker_mediums_selected").await["mediums"],
        json!({})
    );
    let all = json!({"telegram": "9123456789", "whatsapp": "9123456780", "call": "9123456781"});
    seeker
        .send(json!({"type": "medium_selection", "session_id": session_id, "mediums": all}))
        .await;
    assert_eq!(seeker.expect("mediums_selected").await["mediums"], all);
    assert_eq!(
        provider.expect("seeker_mediums_selected").await["mediums"],
        all
    );
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["seeker_mediums"], all);
}

#[tokio::test]
async fn invalid_selections_are_refused_with_the_seed_text_and_change_nothing() {
    let stack = stack().await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    let invalid = [
        json!({"signal": "9123456789"}),
        json!({"telegram": "9123456789", "whatsapp": "9123456789", "call": "9123456789", "sms": "9123456789"}),
        json!({"telegram": "12345"}),
        json!({"telegram": "12345678901"}),
        json!({"telegram": "91234567ab"}),
        json!({"telegram": 9123456789u64}),
        json!(["telegram"]),
        json!("telegram"),
        json!(null),
    ];
    for mediums in invalid {
        seeker
            .send(json!({"type": "medium_selection", "session_id": session_id, "mediums": mediums}))
            .await;
        let error = seeker.expect("error").await;
        assert_eq!(error["error"], INVALID, "mediums {mediums}");
        assert_eq!(error["request_type"], "medium_selection");
    }
    seeker.assert_usable().await;
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["connection_state"], "waiting");
    assert!(snapshot.body["seeker_mediums"].is_null());
}

#[tokio::test]
async fn the_provider_shares_mediums_in_waiting_and_active() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let mediums = json!({"call": "9876543210"});
    provider
        .send(json!({"type": "medium_share", "session_id": session_id, "mediums": mediums}))
        .await;
    assert_eq!(provider.expect("mediums_shared").await["mediums"], mediums);
    assert_eq!(
        seeker.expect("provider_mediums_shared").await["mediums"],
        mediums
    );
    seeker.send(json!({"type": "medium_selection", "session_id": session_id, "mediums": {"call": "9123456789"}})).await;
    seeker.expect("mediums_selected").await;
    let changed = json!({"whatsapp": "9876543210", "telegram": "9876543210"});
    provider
        .send(json!({"type": "medium_share", "session_id": session_id, "mediums": changed}))
        .await;
    assert_eq!(provider.expect("mediums_shared").await["mediums"], changed);
    assert_eq!(
        seeker.expect("provider_mediums_shared").await["mediums"],
        changed
    );
    provider.send(json!({"type": "medium_share", "session_id": session_id, "mediums": {"fax": "1234567890"}})).await;
    assert_eq!(provider.expect_error().await, INVALID);
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["provider_mediums"], changed);
    assert_eq!(snapshot.body["connection_state"], "active");
}

#[tokio::test]
async fn only_participants_of_a_live_session_can_set_mediums() {
    let stack = stack().await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    let mut stranger = stack.connect("seek2", Role::Seeker).await;
    stranger
        .send(json!({"type": "medium_selection", "session_id": session_id, "mediums": {}}))
        .await;
    assert_eq!(stranger.expect_error().await, "session not found");
    seeker
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    seeker.expect("connection_cancelled").await;
    seeker.expect_closed().await;
    let mut again = stack.connect("seek1", Role::Seeker).await;
    again
        .send(json!({"type": "medium_selection", "session_id": session_id, "mediums": {}}))
        .await;
    assert_eq!(again.expect_error().await, "session already ended");
}
