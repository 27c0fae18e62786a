//! Arrival (contract section 14), through the real gateway, workers, nats-server and Postgres:
//! two provider fixes inside `ARRIVAL_RADIUS_M` (100 m here, the default) announce the arrival once
//! to both parties and in the chat; one is not enough; an inaccurate fix is skipped; jitter at the
//! edge repeats nothing; leaving past the exit distance (150 m) re-arms it, at most 3 times; a
//! SIGKILLed owner neither loses nor repeats it; a bad `accuracy` is refused.

use serde_json::{Value, json};
use std::time::Duration;
use system_tests::{Client, StackOptions, TestStack};

/// ~1 m of latitude in degrees.
const METER: f64 = 1.0 / 111_195.0;
/// Where the seeker waits; the provider's fixes are so many meters north of it.
const BASE_LATITUDE: f64 = 28.61;
const BASE_LONGITUDE: f64 = 77.2;
const ARRIVED: &str = "The provider has arrived.";
/// Long enough for a frame to go through the gateway and the worker and its events to come back.
const QUIET: Duration = Duration::from_millis(1200);

async fn stack(tick_secs: &str) -> TestStack {
    TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat", "distance"])
            // Fixes here follow each other faster than a phone sends them.
            .without_rate_limits()
            .env("DISTANCE_TICK_SECS", tick_secs),
    )
    .await
}

/// A fix `meters_north` of the base point, with `accuracy` when given.
async fn fix(client: &mut Client, session_id: &str, meters_north: f64, accuracy: Option<Value>) {
    let mut frame = json!({
        "type": "location_update", "session_id": session_id,
        "latitude": BASE_LATITUDE + meters_north * METER, "longitude": BASE_LONGITUDE,
    });
    if let Some(accuracy) = accuracy {
        frame["accuracy"] = accuracy;
    }
    client.send(frame).await;
}

/// A session whose seeker is at the base point and whose provider is `provider_meters` north,
/// both positions known to the worker (the first `distance_update` arrived).
async fn session_at(stack: &TestStack, provider_meters: f64) -> (Client, Client, String) {
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    fix(&mut seeker, &session_id, 0.0, None).await;
    fix(&mut provider, &session_id, provider_meters, None).await;
    for client in [&mut seeker, &mut provider] {
        client.expect("distance_update").await;
    }
    (seeker, provider, session_id)
}

/// Waits for `provider_arrived` on both parties and checks it; returns its distance.
#[track_caller]
fn expect_arrival<'a>(
    seeker: &'a mut Client,
    provider: &'a mut Client,
    session_id: &'a str,
) -> impl std::future::Future<Output = f64> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let mut distances = Vec::new();
        for client in [seeker, provider] {
            let arrived = client.expect("provider_arrived").await;
            assert_eq!(arrived["session_id"], session_id, "{caller}");
            let timestamp = arrived["timestamp"].as_str().expect("timestamp");
            assert!(timestamp.ends_with('Z'), "{caller}: {timestamp}");
            distances.push(arrived["distance_meters"].as_f64().expect("distance"));
        }
        assert_eq!(
            distances[0], distances[1],
            "{caller}: both hear the same arrival"
        );
        distances[0]
    }
}

/// Waits for the arrival's `system_message` (earlier system messages, such as the session's start,
/// are skipped) and returns it.
async fn expect_arrival_message(client: &mut Client) -> Value {
    loop {
        let message = client.expect("system_message").await;
        if message["message"] == ARRIVED {
            return message;
        }
    }
}

/// No second announcement to either party within [`QUIET`].
async fn expect_no_arrival(seeker: &mut Client, provider: &mut Client) {
    seeker.expect_no("provider_arrived", QUIET).await;
    provider
        .expect_no("provider_arrived", Duration::from_millis(100))
        .await;
}

async fn arrivals_stored(stack: &TestStack) -> (i64, i64) {
    let messages = stack
        .count("SELECT count(*) FROM chat_messages WHERE message_text = 'The provider has arrived.' AND sender_type = 'system'")
        .await;
    let counted = stack
        .count("SELECT COALESCE(max(arrivals_count), 0)::bigint FROM work_sessions")
        .await;
    (messages, counted)
}

#[tokio::test]
async fn two_fixes_inside_announce_the_arrival_once_to_both_parties_and_in_the_chat() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id) = session_at(&stack, 1000.0).await;
    fix(&mut provider, &session_id, 80.0, None).await;
    fix(&mut provider, &session_id, 60.0, None).await;
    let distance = expect_arrival(&mut seeker, &mut provider, &session_id).await;
    assert!((distance - 60.0).abs() < 1.0, "{distance}");
    // The system message, with the next seq, to both parties: the same message.
    let for_seeker = expect_arrival_message(&mut seeker).await;
    let for_provider = expect_arrival_message(&mut provider).await;
    assert_eq!(for_seeker["message_id"], for_provider["message_id"]);
    assert_eq!(for_seeker["seq"], 2, "after the session's start message");
    assert_eq!(for_seeker["session_id"], session_id.as_str());
    // Staying there announces nothing more.
    for meters in [40.0, 30.0, 20.0, 20.0] {
        fix(&mut provider, &session_id, meters, None).await;
    }
    expect_no_arrival(&mut seeker, &mut provider).await;
    assert_eq!(arrivals_stored(&stack).await, (1, 1));
    // Stored like the chat's other system messages: `resume` gives it again, with its seq.
    seeker
        .send(json!({"type": "resume", "session_id": session_id, "last_seq": 1}))
        .await;
    seeker.expect("session_state").await;
    let resent = seeker.expect("system_message").await;
    assert_eq!(resent["message"], ARRIVED);
    assert_eq!(resent["message_id"], for_seeker["message_id"]);
    assert_eq!(resent["seq"], 2);
}

#[tokio::test]
async fn one_fix_inside_is_not_enough() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id) = session_at(&stack, 1000.0).await;
    fix(&mut provider, &session_id, 50.0, None).await;
    expect_no_arrival(&mut seeker, &mut provider).await;
    // A fix outside breaks the run: the next one inside is again only the first.
    fix(&mut provider, &session_id, 120.0, None).await;
    fix(&mut provider, &session_id, 50.0, None).await;
    expect_no_arrival(&mut seeker, &mut provider).await;
    assert_eq!(arrivals_stored(&stack).await, (0, 0));
    // The second consecutive one is.
    fix(&mut provider, &session_id, 50.0, None).await;
    expect_arrival(&mut seeker, &mut provider, &session_id).await;
}

#[tokio::test]
async fn an_inaccurate_fix_neither_counts_nor_breaks_the_run() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id) = session_at(&stack, 1000.0).await;
    fix(&mut provider, &session_id, 50.0, Some(json!(20.0))).await;
    // Inside, but less accurate than the radius: it does not count as the second fix...
    fix(&mut provider, &session_id, 50.0, Some(json!(150.0))).await;
    expect_no_arrival(&mut seeker, &mut provider).await;
    // ...and an inaccurate one far away does not break the run either.
    fix(&mut provider, &session_id, 400.0, Some(json!(500))).await;
    expect_no_arrival(&mut seeker, &mut provider).await;
    fix(&mut provider, &session_id, 70.0, Some(json!(8))).await;
    let distance = expect_arrival(&mut seeker, &mut provider, &session_id).await;
    assert!((distance - 70.0).abs() < 1.0, "{distance}");
}

#[tokio::test]
async fn the_seeker_walking_to_a_parked_provider_counts_but_not_an_inaccurate_seeker_fix() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id) = session_at(&stack, 300.0).await;
    // The seeker's phone claims to be 10 m from the provider, give or take 500 m.
    fix(&mut seeker, &session_id, 310.0, Some(json!(500))).await;
    seeker.expect("distance_update").await;
    fix(&mut provider, &session_id, 300.0, None).await;
    fix(&mut provider, &session_id, 300.0, None).await;
    expect_no_arrival(&mut seeker, &mut provider).await;
    // An accurate fix 50 m from the parked provider: its next two fixes make the arrival.
    fix(&mut seeker, &session_id, 250.0, Some(json!(5))).await;
    seeker.expect("distance_update").await;
    fix(&mut provider, &session_id, 300.0, None).await;
    fix(&mut provider, &session_id, 300.0, None).await;
    let distance = expect_arrival(&mut seeker, &mut provider, &session_id).await;
    assert!((distance - 50.0).abs() < 1.0, "{distance}");
}

#[tokio::test]
async fn jitter_across_the_edge_fires_once() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id) = session_at(&stack, 1000.0).await;
    // In and out at the radius: never two consecutive fixes inside, so no arrival yet.
    for meters in [95.0, 105.0, 96.0, 108.0, 94.0, 103.0] {
        fix(&mut provider, &session_id, meters, None).await;
    }
    expect_no_arrival(&mut seeker, &mut provider).await;
    fix(&mut provider, &session_id, 97.0, None).await;
    fix(&mut provider, &session_id, 93.0, None).await;
    expect_arrival(&mut seeker, &mut provider, &session_id).await;
    // Parked at the edge, jittering up to 149 m (the exit distance is 150 m): nothing more.
    for meters in [
        105.0, 95.0, 96.0, 140.0, 92.0, 98.0, 149.0, 99.0, 90.0, 110.0, 95.0, 95.0,
    ] {
        fix(&mut provider, &session_id, meters, None).await;
    }
    expect_no_arrival(&mut seeker, &mut provider).await;
    assert_eq!(arrivals_stored(&stack).await, (1, 1));
}

#[tokio::test]
async fn leaving_past_the_exit_distance_and_coming_back_fires_again_at_most_3_times() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id) = session_at(&stack, 1000.0).await;
    for approach in 1..=4 {
        fix(&mut provider, &session_id, 60.0, None).await;
        fix(&mut provider, &session_id, 50.0, None).await;
        if approach <= 3 {
            expect_arrival(&mut seeker, &mut provider, &session_id).await;
            expect_arrival_message(&mut seeker).await;
            expect_arrival_message(&mut provider).await;
        } else {
            expect_no_arrival(&mut seeker, &mut provider).await;
        }
        // One fix beyond 150 m re-arms it.
        fix(&mut provider, &session_id, 160.0, None).await;
    }
    fix(&mut provider, &session_id, 50.0, None).await;
    fix(&mut provider, &session_id, 50.0, None).await;
    expect_no_arrival(&mut seeker, &mut provider).await;
    assert_eq!(arrivals_stored(&stack).await, (3, 3));
}

#[tokio::test]
async fn two_instances_with_the_owner_sigkilled_between_the_two_fixes_announce_once() {
    // Ticks every second persist the positions a new owner starts from.
    let mut stack = stack("1").await;
    let (mut seeker, mut provider, session_id) = session_at(&stack, 1000.0).await;
    // The only instance owns the session and sees the first fix inside.
    fix(&mut provider, &session_id, 50.0, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A second instance starts, and the owner dies with half a run in its memory.
    stack.start_worker("distance");
    stack.kill_one_worker("distance");
    // The dead one's heartbeat expires within 3 s; the survivor then owns every session.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for meters in [50.0, 45.0] {
        fix(&mut provider, &session_id, meters, None).await;
    }
    expect_arrival(&mut seeker, &mut provider, &session_id).await;
    expect_arrival_message(&mut seeker).await;
    for meters in [40.0, 40.0, 40.0] {
        fix(&mut provider, &session_id, meters, None).await;
    }
    expect_no_arrival(&mut seeker, &mut provider).await;
    assert_eq!(arrivals_stored(&stack).await, (1, 1));
    // The instance that announced dies too: the next owner reads the arrival from Postgres and
    // does not announce it again...
    stack.start_worker("distance");
    stack.kill_one_worker("distance");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for meters in [40.0, 40.0, 40.0] {
        fix(&mut provider, &session_id, meters, None).await;
    }
    expect_no_arrival(&mut seeker, &mut provider).await;
    assert_eq!(arrivals_stored(&stack).await, (1, 1));
    // ...until the provider leaves and comes back.
    for meters in [1000.0, 50.0, 50.0] {
        fix(&mut provider, &session_id, meters, None).await;
    }
    expect_arrival(&mut seeker, &mut provider, &session_id).await;
    assert_eq!(arrivals_stored(&stack).await, (2, 2));
}

#[tokio::test]
async fn an_accuracy_that_is_not_a_number_above_zero_is_refused_and_the_fix_not_used() {
    let stack = stack("60").await;
    let (mut seeker, mut provider, session_id) = session_at(&stack, 1000.0).await;
    for accuracy in [
        json!(0),
        json!(-5.0),
        json!("10"),
        json!(true),
        json!({"meters": 5}),
    ] {
        fix(&mut provider, &session_id, 500.0, Some(accuracy.clone())).await;
        let error = provider.expect("error").await;
        assert_eq!(error["error"], "invalid accuracy", "{accuracy}");
        assert_eq!(error["request_type"], "location_update");
        assert_eq!(error["session_id"], session_id.as_str());
    }
    // None of those 500 m moves was used.
    seeker.expect_no("distance_update", QUIET).await;
    // A null accuracy is no accuracy; a positive one is fine.
    fix(&mut provider, &session_id, 500.0, Some(json!(null))).await;
    let update = seeker.expect("distance_update").await;
    assert_eq!(update["distance_formatted"], "500 meters away");
    fix(&mut provider, &session_id, 420.0, Some(json!(3.5))).await;
    let update = seeker.expect("distance_update").await;
    assert_eq!(update["distance_formatted"], "420 meters away");
    provider
        .expect_no("error", Duration::from_millis(300))
        .await;
}
