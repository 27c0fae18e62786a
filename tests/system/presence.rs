//! Contract section 8: presence. A participant is online while any socket of theirs is open on
//! any gateway; the other participants hear when that changes, after a grace period for leaving.

use serde_json::Value;
use shared::auth::Role;
use std::time::{Duration, Instant};
use system_tests::{Client, StackOptions, TestStack};

async fn stack(grace_secs: &str) -> TestStack {
    TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "mediums", "chat"])
            .env("PRESENCE_GRACE_SECS", grace_secs),
    )
    .await
}

fn is_presence(frame: &Value, role: &str, online: bool, session_id: &str) {
    assert_eq!(frame["session_id"], session_id);
    assert_eq!(frame["role"], role);
    assert_eq!(frame["online"], online);
    assert!(frame["timestamp"].is_string());
    assert!(frame.get("user_id").is_none(), "roles only");
}

/// Waits until the lifecycle worker has seen both parties come online (it hears the gateways'
/// presence facts a moment after the sockets open; a busy machine makes that moment longer).
async fn both_online(stack: &TestStack, session_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = stack.snapshot(session_id, "seek1", Role::Seeker).await;
        let presence = &snapshot.body["presence"];
        if presence["seeker"] == true && presence["provider"] == true {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "both parties online in the snapshot: {presence}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_other_party_hears_a_participant_leave_after_the_grace_and_come_back() {
    let stack = stack("1").await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    both_online(&stack, &session_id).await;
    let left_at = Instant::now();
    provider.close().await;
    let offline = seeker.expect("presence").await;
    is_presence(&offline, "provider", false, &session_id);
    assert!(
        left_at.elapsed() >= Duration::from_secs(1),
        "not before the grace"
    );
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["presence"]["provider"], false);

    let _provider = stack.connect("prov1", Role::Provider).await;
    is_presence(
        &seeker.expect("presence").await,
        "provider",
        true,
        &session_id,
    );
    let snapshot = stack.snapshot(&session_id, "prov1", Role::Provider).await;
    assert_eq!(snapshot.body["presence"]["provider"], true);
}

#[tokio::test]
async fn a_quick_reconnect_within_the_grace_period_sends_no_presence() {
    let stack = stack("3").await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    both_online(&stack, &session_id).await;
    provider.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    provider.assert_usable().await;
    seeker.expect_no("presence", Duration::from_secs(4)).await;
}

#[tokio::test]
async fn presence_holds_across_two_gateways_and_a_killed_gateway_takes_its_users_offline_within_15_s()
 {
    let stack = stack("5").await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    let gateway = stack.extra_gateway(&stack.nats_address()).await;
    let token = stack.token("prov1", Role::Provider);
    let mut on_second = Client::connect(&gateway.address, Role::Provider, &token)
        .await
        .expect("a socket on the second gateway");
    on_second.assert_usable().await;
    // The first gateway's socket closes: the provider is still online on the second.
    provider.close().await;
    seeker.expect_no("presence", Duration::from_secs(6)).await;
    // The second gateway dies without a word (SIGKILL).
    let killed_at = Instant::now();
    drop(gateway);
    let offline = seeker
        .find("presence", Duration::from_secs(15))
        .await
        .expect("offline within 15 s of the gateway's death");
    is_presence(&offline, "provider", false, &session_id);
    eprintln!("offline {:?} after the gateway died", killed_at.elapsed());
}
