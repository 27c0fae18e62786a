//! The authorization probe (contract sections 3, 4 and 6): for every REST route and frame type
//! that names a session, a message or a work order, a user of another session, a stranger and a
//! token of the wrong role are refused, and learn nothing: the same 404 / "session not found" a
//! made-up id gets, never a hint that the thing exists.

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
            .count("SELECT count(*) FROM chat_messages")
            .await,
        1
    );
}
