//! The authorization probe (contract sections 3, 4 and 6): for every REST route and frame type
//! that names a session, a message or a work order, a user of another session, a stranger and a
//! token of the wrong role are refused, and learn nothing: the same 404 / "session not found" a
//! made-up id gets, never a hint that the thing exists.

use futures::StreamExt;
use serde_json::{Value, json};
use shared::auth::Role;
use std::time::Duration;
use system_tests::{Client, StackOptions, TestStack};

struct World {
    stack: TestStack,
    session_id: String,
    work_id: i64,
    message_id: String,
}

/// A live session between s1 and p1 with one message, and a second one between s2 and p2.
async fn world() -> World {
    let stack = TestStack::with(StackOptions::default().only(&[
        "lifecycle",
        "mediums",
        "chat",
        "distance",
    ]))
    .await;
    let (mut seeker, mut provider, session_id) = stack.active_session("s1", "p1").await;
    let work_id = stack.snapshot(&session_id, "s1", Role::Seeker).await.body["work_id"]
        .as_i64()
        .expect("work_id");
    seeker
        .send(json!({"type": "chat_message", "session_id": session_id, "message": "private"}))
        .await;
    let message_id = seeker.expect("message_sent").await["message_id"]
        .as_str()
        .expect("message_id")
        .to_owned();
    provider.expect("chat_message").await;
    stack.active_session("s2", "p2").await;
    World {
        stack,
        session_id,
        work_id,
        message_id,
    }
}

#[tokio::test]
async fn rest_routes_answer_others_and_strangers_as_if_nothing_existed() {
    let world = world().await;
    let http = world.stack.http();
    let made_up = uuid::Uuid::new_v4();
    let routes = [
        format!("/api/sessions/{}", world.session_id),
        format!("/api/sessions/{}/messages", world.session_id),
        format!("/api/work-orders/{}", world.work_id),
    ];
    let unknown = [
        format!("/api/sessions/{made_up}"),
        format!("/api/sessions/{made_up}/messages"),
        String::from("/api/work-orders/999999"),
    ];
    for (route, unknown) in routes.iter().zip(unknown.iter()) {
        let expected = http
            .get(unknown, &world.stack.token("s2", Role::Seeker))
            .await
            .expect_status(404)
            .body;
        for (user, role) in [
            ("s2", Role::Seeker),
            ("p2", Role::Provider),
            ("stranger", Role::Seeker),
            ("stranger", Role::Provider),
            // The session's own users with the other role's token are someone else.
            ("s1", Role::Provider),
            ("p1", Role::Seeker),
        ] {
            let reply = http.get(route, &world.stack.token(user, role)).await;
            assert_eq!(reply.status, 404, "{route} as {user} ({role:?})");
            assert_eq!(
                reply.body, expected,
                "{route} as {user}: the same answer as a made-up id"
            );
        }
        // The participants themselves read it.
        http.get(route, &world.stack.token("s1", Role::Seeker))
            .await
            .expect_status(200);
    }
    // Routes of the other role.
    let seeker = world.stack.token("s1", Role::Seeker);
    let provider = world.stack.token("p1", Role::Provider);
    http.get("/api/provider/status", &seeker)
        .await
        .expect_status(403);
    http.put("/api/provider/status", &seeker, json!({"is_active": true}))
        .await
        .expect_status(403);
    http.get("/api/seeker/search", &provider)
        .await
        .expect_status(403);
    http.post("/api/work-orders", &provider, json!({}))
        .await
        .expect_status(403);
}

async fn answer(socket: &mut Client, frame: Value) -> String {
    socket.send(frame.clone()).await;
    let reply = socket
        .find("error", Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no error for {frame}"));
    reply["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn frames_about_someone_elses_session_get_the_same_answer_as_a_made_up_id() {
    let world = world().await;
    let (session, made_up) = (world.session_id.as_str(), uuid::Uuid::new_v4().to_string());
    let session_frames = |session_id: &str| {
        vec![
            json!({"type": "start_chat", "session_id": session_id}),
            json!({"type": "chat_message", "session_id": session_id, "message": "hi"}),
            json!({"type": "resume", "session_id": session_id, "last_seq": 0}),
            json!({"type": "typing_indicator", "session_id": session_id, "is_typing": true}),
            json!({"type": "location_update", "session_id": session_id, "latitude": 28.7, "longitude": 77.1}),
            json!({"type": "cancel_connection", "session_id": session_id}),
            json!({"type": "finish_service", "session_id": session_id, "rating_stars": 5}),
        ]
    };
    for (user, role) in [
        ("s2", Role::Seeker),
        ("stranger", Role::Seeker),
        ("p2", Role::Provider),
        ("stranger2", Role::Provider),
    ] {
        let mut socket = world.stack.connect(user, role).await;
        let mut frames = session_frames(session);
        let mut unknown = session_frames(&made_up);
        let (own, own_unknown) = match role {
            Role::Seeker => (
                json!({"type": "medium_selection", "session_id": session, "mediums": {"call": "9123456789"}}),
                json!({"type": "medium_selection", "session_id": made_up, "mediums": {"call": "9123456789"}}),
            ),
            Role::Provider => (
                json!({"type": "medium_share", "session_id": session, "mediums": {"call": "9123456789"}}),
                json!({"type": "medium_share", "session_id": made_up, "mediums": {"call": "9123456789"}}),
            ),
            Role::Mediator => unreachable!("mediators are probed in the disputes tests"),
        };
        frames.push(own);
        unknown.push(own_unknown);
        for (frame, unknown) in frames.into_iter().zip(unknown) {
            let expected = answer(&mut socket, unknown).await;
            assert_eq!(expected, "session not found", "a made-up id");
            assert_eq!(
                answer(&mut socket, frame.clone()).await,
                expected,
                "{frame} as {user}"
            );
        }
        for kind in ["message_delivered", "message_read"] {
            let frame = json!({"type": kind, "message_id": world.message_id});
            assert_eq!(
                answer(&mut socket, frame).await,
                "message not found",
                "{kind} as {user}"
            );
        }
        if role == Role::Provider {
            let frame =
                json!({"type": "work_response", "work_id": world.work_id, "accepted": true});
            let unknown = json!({"type": "work_response", "work_id": 999_999, "accepted": true});
            let expected = answer(&mut socket, unknown).await;
            assert_eq!(
                answer(&mut socket, frame).await,
                expected,
                "work_response as {user}"
            );
        }
    }
    // Nothing changed: the session is still live with its one message, nobody else's mediums.
    let snapshot = world.stack.snapshot(session, "s1", Role::Seeker).await;
    assert_eq!(snapshot.body["connection_state"], "active");
    assert_eq!(
        world
            .stack
            .count("SELECT count(*) FROM chat_messages WHERE kind <> 'system'")
            .await,
        1
    );
}

/// A chat frame as only the gateway should be able to put it on NATS: the seeker's identity in the
/// headers the workers trust.
fn forged_chat_frame(
    session_id: &str,
    text: &str,
) -> (String, async_nats::HeaderMap, bytes::Bytes) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(shared::headers::USER_ID, "s1");
    headers.insert(shared::headers::ROLE, "seeker");
    headers.insert(shared::headers::CONN_ID, "forged-socket");
    headers.insert(shared::headers::TRACE_ID, "forged");
    headers.insert(
        shared::headers::MSG_ID,
        uuid::Uuid::new_v4().to_string().as_str(),
    );
    let frame = json!({"type": "chat_message", "session_id": session_id, "message": text});
    (
        format!("session.{session_id}.chat"),
        headers,
        frame.to_string().into(),
    )
}

#[tokio::test]
async fn only_the_gateway_may_publish_client_frames_and_only_workers_user_events() {
    use system_tests::NatsUser;
    let world = world().await;
    let stack = &world.stack;
    let mut provider = stack.connect("p1", Role::Provider).await;
    // The world's message was never marked delivered: it is re-sent to the new socket.
    assert_eq!(provider.expect("chat_message").await["message"], "private");
    // Nobody gets in without a user of nats/server.conf.
    let anonymous = format!("nats://{}", stack.nats_address());
    assert!(
        shared::nats::connect_checked(&anonymous, "stranger")
            .await
            .is_err()
    );

    // The tracing user sees every subject...
    let trace = stack.nats_as(NatsUser::Trace).await;
    let mut traced = trace.subscribe("session.>").await.expect("subscribe");
    trace.flush().await.expect("flush");
    // ...but neither it nor a worker can act as a user.
    for user in [NatsUser::Trace, NatsUser::Worker] {
        let nats = stack.nats_as(user).await;
        let (subject, headers, payload) = forged_chat_frame(&world.session_id, "forged");
        let _ = nats.publish_with_headers(subject, headers, payload).await;
        let _ = nats.flush().await;
    }
    // Nor can the gateway's user (nor the tracing one) speak to a user's sockets.
    let forged_event = json!({"type": "chat_message", "session_id": world.session_id,
        "message_id": uuid::Uuid::new_v4(), "seq": 99, "sender_type": "seeker",
        "message": "forged event", "timestamp": "2026-01-01T00:00:00Z"});
    for user in [NatsUser::Gateway, NatsUser::Trace] {
        let nats = stack.nats_as(user).await;
        let _ = nats
            .publish("user.p1.events", forged_event.to_string().into())
            .await;
        let _ = nats.flush().await;
    }
    provider
        .expect_no("chat_message", Duration::from_millis(1500))
        .await;
    assert_eq!(
        stack
            .count("SELECT count(*) FROM chat_messages WHERE message_text = 'forged'")
            .await,
        0
    );

    // The same frame from the gateway's user is a frame like any other (so the refusals above are
    // the permissions at work), and a worker's event reaches the socket.
    let gateway = stack.nats_as(NatsUser::Gateway).await;
    let (subject, headers, payload) = forged_chat_frame(&world.session_id, "through the gateway");
    gateway
        .publish_with_headers(subject, headers, payload)
        .await
        .expect("publish");
    gateway.flush().await.expect("flush");
    assert_eq!(
        provider.expect("chat_message").await["message"],
        "through the gateway"
    );
    let seen = tokio::time::timeout(Duration::from_secs(5), traced.next())
        .await
        .expect("the tracing user sees the frame")
        .expect("message");
    assert_eq!(
        seen.subject.as_str(),
        format!("session.{}.chat", world.session_id)
    );
    let worker = stack.nats_as(NatsUser::Worker).await;
    worker
        .publish("user.p1.events", forged_event.to_string().into())
        .await
        .expect("publish");
    worker.flush().await.expect("flush");
    assert_eq!(
        provider.expect("chat_message").await["message"],
        "forged event"
    );
}
