//! Live distance (contract section 4 "Distance"): first update, the move threshold, periodic
//! ticks, formatting, invalid coordinates, the end of a session, and several instances.

use serde_json::json;
use shared::auth::Role;
use std::time::Duration;
use system_tests::{Client, StackOptions, TestStack};

/// ~1 m of latitude in degrees.
const METER: f64 = 1.0 / 111_195.0;

async fn stack(tick_secs: &str) -> TestStack {
    TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "mediums", "distance"])
            // Positions here follow each other faster than a phone sends them.
            .without_rate_limits()
            .env("DISTANCE_TICK_SECS", tick_secs),
    )
    .await
}

async fn locate(client: &mut Client, session_id: &str, latitude: f64, longitude: f64) {
    client
        .send(json!({"type": "location_update", "session_id": session_id, "latitude": latitude, "longitude": longitude}))
        .await;
}

#[tokio::test]
async fn both_parties_get_the_first_update_when_both_positions_are_known() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id) = stack.active_session("seek1", "prov1").await;
    locate(&mut seeker, &session_id, 28.7041, 77.1025).await;
    seeker
        .expect_no("distance_update", Duration::from_millis(300))
        .await;
    provider
        .send(json!({"type": "location_update", "session_id": session_id, "lat": 28.7041 + 1250.5 * METER, "lng": 77.1025}))
        .await;
    for client in [&mut seeker, &mut provider] {
        let update = client.expect("distance_update").await;
        assert_eq!(update["session_id"], session_id.as_str());
        assert_eq!(update["distance_formatted"], "1.3 km away");
        let meters = update["distance_meters"].as_f64().expect("meters");
        assert!((meters - 1250.5).abs() < 1.0, "{meters}");
    }
    let snapshot = stack.snapshot(&session_id, "seek1", Role::Seeker).await;
    assert_eq!(snapshot.body["connection_state"], "active");
}

#[tokio::test]
async fn a_30_m_move_sends_nothing_and_a_60_m_move_sends_one_update_to_both() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    locate(&mut provider, &session_id, 10.0, 10.0).await;
    locate(&mut seeker, &session_id, 10.0 + 500.0 * METER, 10.0).await;
    seeker.expect("distance_update").await;
    provider.expect("distance_update").await;
    locate(&mut seeker, &session_id, 10.0 + 530.0 * METER, 10.0).await;
    seeker
        .expect_no("distance_update", Duration::from_millis(500))
        .await;
    locate(&mut seeker, &session_id, 10.0 + 560.0 * METER, 10.0).await;
    for client in [&mut seeker, &mut provider] {
        let update = client.expect("distance_update").await;
        assert_eq!(update["distance_formatted"], "560 meters away");
        client
            .expect_no("distance_update", Duration::from_millis(300))
            .await;
    }
}

#[tokio::test]
async fn formatting_switches_to_kilometres_at_1000_m() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    locate(&mut provider, &session_id, 0.0, 0.0).await;
    locate(&mut seeker, &session_id, 999.0 * METER, 0.0).await;
    assert_eq!(
        seeker.expect("distance_update").await["distance_formatted"],
        "999 meters away"
    );
    locate(&mut seeker, &session_id, 1060.0 * METER, 0.0).await;
    assert_eq!(
        seeker.expect("distance_update").await["distance_formatted"],
        "1.1 km away"
    );
    locate(&mut provider, &session_id, 60.0 * METER, 0.0).await;
    assert_eq!(
        seeker.expect("distance_update").await["distance_formatted"],
        "1.0 km away"
    );
}

#[tokio::test]
async fn the_periodic_tick_repeats_the_distance() {
    let stack = stack("1").await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    locate(&mut provider, &session_id, 0.0, 0.0).await;
    locate(&mut seeker, &session_id, 100.0 * METER, 0.0).await;
    seeker.expect("distance_update").await;
    // Moves below the threshold are not sent at once, but the next tick uses them.
    locate(&mut seeker, &session_id, 110.0 * METER, 0.0).await;
    let tick = seeker.expect("distance_update").await;
    assert_eq!(tick["distance_formatted"], "110 meters away");
    provider.expect("distance_update").await;
    seeker.expect("distance_update").await;
}

#[tokio::test]
async fn invalid_coordinates_are_refused() {
    let stack = stack("60").await;
    let (mut seeker, _provider, session_id, _) = stack.session("seek1", "prov1").await;
    for (latitude, longitude) in [
        (json!(91.0), json!(0.0)),
        (json!(0.0), json!(-181.0)),
        (json!("north"), json!(1.0)),
        (json!(null), json!(1.0)),
    ] {
        seeker
            .send(json!({"type": "location_update", "session_id": session_id, "latitude": latitude, "longitude": longitude}))
            .await;
        let error = seeker.expect("error").await;
        assert!(
            error["error"]
                .as_str()
                .expect("text")
                .starts_with("invalid coordinates")
        );
        assert_eq!(error["request_type"], "location_update");
    }
    seeker
        .send(json!({"type": "location_update", "session_id": session_id}))
        .await;
    assert!(
        seeker
            .expect_error()
            .await
            .starts_with("invalid coordinates")
    );
}

#[tokio::test]
async fn strangers_and_ended_sessions_get_no_updates() {
    let stack = stack("1").await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    let mut stranger = stack.connect("seek2", Role::Seeker).await;
    locate(&mut stranger, &session_id, 1.0, 1.0).await;
    assert_eq!(stranger.expect_error().await, "session not found");
    locate(&mut provider, &session_id, 0.0, 0.0).await;
    locate(&mut seeker, &session_id, 100.0 * METER, 0.0).await;
    seeker.expect("distance_update").await;
    provider
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    provider.expect_closed().await;
    seeker.expect_closed().await;
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    locate(&mut seeker, &session_id, 200.0 * METER, 0.0).await;
    assert_eq!(seeker.expect_error().await, "session already ended");
    seeker
        .expect_no("distance_update", Duration::from_secs(2))
        .await;
}

#[tokio::test]
async fn two_instances_tick_each_session_once_and_survive_one_dying() {
    let mut stack = stack("1").await;
    stack.start_worker("distance");
    // Both instances see each other after a heartbeat or two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut sessions = Vec::new();
    for index in 0..4 {
        let (mut seeker, mut provider, session_id, _) = stack
            .session(&format!("seek{index}"), &format!("prov{index}"))
            .await;
        locate(&mut provider, &session_id, 0.0, 0.0).await;
        locate(&mut seeker, &session_id, 100.0 * METER, 0.0).await;
        seeker.expect("distance_update").await;
        sessions.push((seeker, provider, session_id));
    }
    // Count ticks over ~4 periods: one per period per session, not one per instance.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    for (seeker, _, _) in sessions.iter_mut() {
        let mut ticks = 0;
        while seeker
            .find("distance_update", Duration::from_millis(10))
            .await
            .is_some()
        {
            ticks += 1;
        }
        assert!((3..=5).contains(&ticks), "{ticks} ticks in ~4 periods");
    }
    stack.kill_one_worker("distance");
    // Within the heartbeat expiry (3 s) the survivor owns every session and ticks it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (seeker, _, _) in sessions.iter_mut() {
        while seeker
            .find("distance_update", Duration::from_millis(10))
            .await
            .is_some()
        {}
        seeker.expect("distance_update").await;
        seeker.expect("distance_update").await;
    }
}
