//! Contract section 12, "Re-sends cover everything addressed to the user" and the replay part of
//! "Bytes as well as frames": what a socket gets again on connect (in disputes: the mediator's
//! messages to the parties, the parties' to the mediator, ended sessions under an open dispute),
//! on a Socket.IO room join, and how large one page aimed at one socket may be.

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shared::auth::Role;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use system_tests::{Client, FIRST_SEQ, StackOptions, TestStack};
use tokio_tungstenite::tungstenite::Message;

/// A page aimed at one socket holds at most this many bytes of event JSON.
const PAGE_BYTES: usize = 256 * 1024;
/// ... and at most this many messages.
const PAGE_MESSAGES: usize = 200;
/// How long a socket must stay quiet for a re-send or a page to count as over.
const QUIET: Duration = Duration::from_millis(700);

async fn stack() -> TestStack {
    TestStack::with(
        StackOptions::default()
            .only(&["lifecycle", "chat"])
            // Hundreds of messages, some of 12 KB, sent as fast as the socket takes them: the
            // limits themselves are tested in limits.rs.
            .without_rate_limits()
            .env("WS_RATE_BYTES_PER_SEC", "100000000"),
    )
    .await
}

async fn say(client: &mut Client, session_id: &str, text: &str) -> Value {
    client
        .send(json!({"type": "chat_message", "session_id": session_id, "message": text}))
        .await;
    client.expect("message_sent").await
}

/// Sends `count` messages of `text_of(index)` without waiting between them, then waits for all
/// their confirmations; returns the confirmations in order.
async fn say_many(
    client: &mut Client,
    session_id: &str,
    count: usize,
    text_of: impl Fn(usize) -> String,
) -> Vec<Value> {
    for index in 0..count {
        client
            .send(json!({"type": "chat_message", "session_id": session_id, "message": text_of(index)}))
            .await;
    }
    let mut sent = Vec::with_capacity(count);
    for _ in 0..count {
        sent.push(client.expect("message_sent").await);
    }
    sent
}

/// Every `chat_message` that arrives until the socket has been quiet for `QUIET`.
async fn chat_messages_until_quiet(client: &mut Client) -> Vec<Value> {
    let mut messages = Vec::new();
    while let Some(message) = client.find("chat_message", QUIET).await {
        messages.push(message);
    }
    messages
}

/// The bytes of an event as the server serialized it (same keys and values, same length).
fn event_bytes(event: &Value) -> usize {
    event.to_string().len()
}

/// Opens a dispute as the seeker and has mediator `mediator` join it.
async fn dispute_joined_by(stack: &TestStack, session_id: &str, mediator: &str) {
    let http = stack.http();
    let opened = http
        .post(
            &format!("/api/sessions/{session_id}/dispute"),
            &stack.token("seek1", Role::Seeker),
            json!({"reason": "The work was not done"}),
        )
        .await
        .expect_status(201);
    let dispute_id = opened.body["dispute_id"].as_str().expect("dispute id");
    http.post(
        &format!("/api/disputes/{dispute_id}/join"),
        &stack.token(mediator, Role::Mediator),
        json!({}),
    )
    .await
    .expect_status(200);
}

#[tokio::test]
async fn a_party_offline_during_a_dispute_gets_the_mediators_messages_when_it_reconnects() {
    let stack = stack().await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    dispute_joined_by(&stack, &session_id, "med1").await;
    provider.close().await;
    let mut mediator = stack.connect("med1", Role::Mediator).await;
    let mut ids = Vec::new();
    for text in ["Hello both.", "Please send photos of the tap."] {
        ids.push(say(&mut mediator, &session_id, text).await["message_id"].clone());
    }
    // The seeker's phone has them and says so, as phones do: the messages' one status moves.
    for id in &ids {
        let heard = seeker.expect("chat_message").await;
        assert_eq!(&heard["message_id"], id);
        seeker
            .send(json!({"type": "message_delivered", "message_id": id, "session_id": session_id}))
            .await;
    }
    let delivered = stack
        .count_until(
            "SELECT count(*) FROM chat_messages
             WHERE sender_type = 'mediator' AND delivery_status = 'delivered'
               AND seeker_delivered_at IS NOT NULL",
            2,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(delivered, 2);

    // The provider never got them: they come again, oldest first, as not delivered (to it).
    let mut provider = stack.connect("prov1", Role::Provider).await;
    for (id, text) in ids
        .iter()
        .zip(["Hello both.", "Please send photos of the tap."])
    {
        let message = provider.expect("chat_message").await;
        assert_eq!(&message["message_id"], id);
        assert_eq!(message["sender_type"], "mediator");
        assert_eq!(message["message"], text);
        assert_eq!(message["delivery_status"], "sent");
    }
    provider
        .expect_no("chat_message", Duration::from_millis(300))
        .await;
    // The seeker acknowledged them: nothing for the seeker.
    let mut seeker_again = stack.connect("seek1", Role::Seeker).await;
    seeker_again
        .expect_no("chat_message", Duration::from_millis(500))
        .await;

    // Once the provider has read them, they are the provider's too.
    let read_up_to = FIRST_SEQ + 10;
    provider
        .send(json!({"type": "messages_read", "session_id": session_id, "up_to_seq": read_up_to}))
        .await;
    let provider_has_them = stack
        .count_until(
            "SELECT count(*) FROM chat_messages
             WHERE sender_type = 'mediator' AND provider_delivered_at IS NOT NULL",
            2,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(provider_has_them, 2);
    provider.close().await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    provider
        .expect_no("chat_message", Duration::from_millis(500))
        .await;
}

#[tokio::test]
async fn messages_of_an_ended_session_under_an_open_dispute_are_re_sent() {
    let stack = stack().await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider.close().await;
    let before = say(&mut seeker, &session_id, "before the end").await;
    seeker
        .send(json!({"type": "cancel_connection", "session_id": session_id}))
        .await;
    seeker.expect_closed().await;

    // Ended without a dispute: nothing is re-sent (the chat is closed).
    let provider = stack.connect("prov1", Role::Provider).await;
    let mut provider = provider;
    provider
        .expect_no("chat_message", Duration::from_millis(700))
        .await;
    provider.close().await;

    // A dispute keeps the chat open after the end: what the provider has not got comes again.
    stack
        .http()
        .post(
            &format!("/api/sessions/{session_id}/dispute"),
            &stack.token("seek1", Role::Seeker),
            json!({"reason": "The tap still leaks"}),
        )
        .await
        .expect_status(201);
    let mut seeker = stack.connect("seek1", Role::Seeker).await;
    let after = say(&mut seeker, &session_id, "after the end").await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    for (sent, text) in [(&before, "before the end"), (&after, "after the end")] {
        let message = provider.expect("chat_message").await;
        assert_eq!(message["message_id"], sent["message_id"]);
        assert_eq!(message["message"], text);
        assert_eq!(message["session_id"], session_id.as_str());
    }
    provider
        .expect_no("chat_message", Duration::from_millis(300))
        .await;

    // Its receipts are taken like the chat (not refused as "session already ended"), so what
    // the provider acknowledged is not sent again.
    for sent in [&before, &after] {
        provider
            .send(json!({"type": "message_delivered", "message_id": sent["message_id"], "session_id": session_id}))
            .await;
    }
    provider
        .expect_no("error", Duration::from_millis(500))
        .await;
    let delivered = stack
        .count_until(
            "SELECT count(*) FROM chat_messages
             WHERE sender_type = 'seeker' AND delivery_status = 'delivered'",
            2,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(delivered, 2);
    provider.close().await;
    let mut provider = stack.connect("prov1", Role::Provider).await;
    provider
        .expect_no("chat_message", Duration::from_millis(500))
        .await;
}

#[tokio::test]
async fn a_mediator_gets_what_the_parties_wrote_while_it_was_offline() {
    let stack = stack().await;
    let (mut seeker, mut provider, session_id, _) = stack.session("seek1", "prov1").await;
    say(&mut seeker, &session_id, "before the mediator joined").await;
    dispute_joined_by(&stack, &session_id, "med1").await;
    let one = say(&mut seeker, &session_id, "one").await;
    let two = say(&mut provider, &session_id, "two").await;
    // The parties' receipts between themselves change nothing for the mediator.
    provider
        .send(json!({"type": "message_read", "message_id": one["message_id"], "session_id": session_id}))
        .await;
    seeker.expect("message_status_update").await;

    // Written after it joined and not read by it: re-sent on connect, oldest first; what came
    // before it joined (it reads that with resume or history) and system messages are not.
    let mut mediator = stack.connect("med1", Role::Mediator).await;
    for (sent, sender, text) in [(&one, "seeker", "one"), (&two, "provider", "two")] {
        let message = mediator.expect("chat_message").await;
        assert_eq!(message["message_id"], sent["message_id"]);
        assert_eq!(message["sender_type"], sender);
        assert_eq!(message["message"], text);
    }
    mediator
        .expect_no("chat_message", Duration::from_millis(500))
        .await;
    assert!(
        mediator
            .find("system_message", Duration::from_millis(100))
            .await
            .is_none(),
        "system messages are not re-sent"
    );
    mediator.close().await;

    // How far it has read is what it has: after reading "one", only "two" comes again.
    let read_up_to = one["seq"].as_i64().expect("seq");
    stack
        .http()
        .post(
            &format!("/api/sessions/{session_id}/read"),
            &stack.token("med1", Role::Mediator),
            json!({"up_to_seq": read_up_to}),
        )
        .await
        .expect_status(200);
    let mut mediator = stack.connect("med1", Role::Mediator).await;
    assert_eq!(
        mediator.expect("chat_message").await["message_id"],
        two["message_id"]
    );
    mediator
        .expect_no("chat_message", Duration::from_millis(500))
        .await;
}

#[tokio::test]
async fn a_resume_page_holds_at_most_256_kib_of_events() {
    let stack = stack().await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider.close().await;
    // 200 messages of 4,000 CJK characters: 12,000 bytes of UTF-8 each, 2.4 MB in all.
    let sent = say_many(&mut seeker, &session_id, 200, |index| {
        format!("{index:04}{}", "界".repeat(3996))
    })
    .await;
    seeker.close().await;

    // Another device of the seeker's pages through the whole chat.
    let mut device = stack.connect("seek1", Role::Seeker).await;
    let mut last_seq = FIRST_SEQ - 1;
    let mut received: Vec<Value> = Vec::new();
    let mut pages = 0;
    // The bytes of the page before, which must have stopped because this page's first message
    // would not fit.
    let mut previous_bytes: Option<usize> = None;
    loop {
        device
            .send(json!({"type": "resume", "session_id": session_id, "last_seq": last_seq}))
            .await;
        let state = device.expect("session_state").await;
        let page = chat_messages_until_quiet(&mut device).await;
        pages += 1;
        assert!(!page.is_empty(), "page {pages} moves on");
        // The server sizes its page with the `session_state` saying `false` (one byte longer).
        let mut state_as_measured = state.clone();
        state_as_measured["has_more"] = Value::Bool(false);
        let bytes = event_bytes(&state_as_measured) + page.iter().map(event_bytes).sum::<usize>();
        assert!(bytes <= PAGE_BYTES, "page {pages} holds {bytes} bytes");
        assert!(page.len() < PAGE_MESSAGES, "cut short by its bytes");
        if let Some(previous) = previous_bytes {
            assert!(
                previous + event_bytes(&page[0]) > PAGE_BYTES,
                "page {} stopped only where the next message would not fit",
                pages - 1
            );
        }
        previous_bytes = Some(bytes);
        for message in &page {
            last_seq += 1;
            assert_eq!(message["seq"], last_seq, "page {pages} is in order");
        }
        received.extend(page);
        let has_more = state["has_more"].as_bool().expect("has_more");
        if received.len() < sent.len() {
            assert!(has_more, "page {pages} says there is more");
        } else {
            assert!(!has_more, "the last page says it is the last");
            break;
        }
        assert!(pages < 50, "paging ends");
    }
    assert!(
        pages >= 10,
        "2.4 MB of events take at least ten pages ({pages})"
    );
    let received_ids: Vec<&Value> = received
        .iter()
        .map(|message| &message["message_id"])
        .collect();
    let sent_ids: Vec<&Value> = sent.iter().map(|message| &message["message_id"]).collect();
    assert_eq!(received_ids, sent_ids, "every message, once, in order");
}

#[tokio::test]
async fn the_re_send_on_connect_is_one_bounded_page_per_session() {
    let stack = stack().await;
    let (mut seeker_a, provider, long_session, _) = stack.session("seek1", "prov1").await;
    provider.close().await;
    let (mut seeker_b, provider, many_session, _) = stack.session("seek2", "prov1").await;
    provider.close().await;
    // One session with 200 long messages (2.4 MB), one with 250 short ones.
    let long = say_many(&mut seeker_a, &long_session, 200, |index| {
        format!("{index:04}{}", "界".repeat(3996))
    })
    .await;
    let many = say_many(&mut seeker_b, &many_session, 250, |index| {
        format!("short {index}")
    })
    .await;

    let mut provider = stack.connect("prov1", Role::Provider).await;
    let mut by_session: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for message in chat_messages_until_quiet(&mut provider).await {
        let session_id = message["session_id"].as_str().expect("session").to_owned();
        by_session.entry(session_id).or_default().push(message);
    }
    assert_eq!(by_session.len(), 2, "both sessions have their page");

    // The long messages: the oldest first, up to 256 KiB, stopping where the next would not fit.
    let page = &by_session[&long_session];
    let bytes: usize = page.iter().map(event_bytes).sum();
    assert!(bytes <= PAGE_BYTES, "{bytes} bytes");
    assert!(
        page.len() < PAGE_MESSAGES && page.len() >= 10,
        "{} messages",
        page.len()
    );
    for (message, sent) in page.iter().zip(&long) {
        assert_eq!(
            message["message_id"], sent["message_id"],
            "oldest first, in order"
        );
    }
    // The rest is there for `resume`; its first message is the one that would not fit.
    let last_seq = page[page.len() - 1]["seq"].clone();
    provider
        .send(json!({"type": "resume", "session_id": long_session, "last_seq": last_seq}))
        .await;
    provider.expect("session_state").await;
    let next = provider.expect("chat_message").await;
    assert_eq!(next["message_id"], long[page.len()]["message_id"]);
    assert!(
        bytes + event_bytes(&next) > PAGE_BYTES,
        "the page stopped only where the next message would not fit"
    );

    // The short ones: the 200 oldest.
    let page = &by_session[&many_session];
    assert_eq!(page.len(), PAGE_MESSAGES);
    for (message, sent) in page.iter().zip(&many) {
        assert_eq!(
            message["message_id"], sent["message_id"],
            "oldest first, in order"
        );
    }
}

/// A Socket.IO v5 client over Engine.IO 4's WebSocket transport, as socket.io-client speaks it:
/// the server's open packet (`0{...}`), the namespace connect with the token (`40{"token"}`),
/// events as `42[name, data]`, and pings (`2`) answered with pongs (`3`).
struct SocketIoClient {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    events: VecDeque<(String, Value)>,
}

impl SocketIoClient {
    async fn connect(stack: &TestStack, user: &str, role: Role) -> SocketIoClient {
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket",
            stack.gateway
        );
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("the Socket.IO transport opens");
        let mut client = SocketIoClient {
            stream,
            events: VecDeque::new(),
        };
        assert!(client.packet_starting("0{").await.is_some(), "open packet");
        let token = stack.token(user, role);
        client
            .send(format!("40{}", json!({ "token": token })))
            .await;
        assert!(
            client.packet_starting("40{").await.is_some(),
            "namespace connected"
        );
        client
    }

    async fn send(&mut self, packet: String) {
        self.stream
            .send(Message::text(packet))
            .await
            .expect("the socket takes the packet");
    }

    async fn emit(&mut self, event: &str, data: Value) {
        self.send(format!("42{}", json!([event, data]))).await;
    }

    /// The next packet starting with `prefix` within 10 s (events met on the way are kept).
    async fn packet_starting(&mut self, prefix: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.next_text(deadline).await?;
            if text.starts_with(prefix) {
                return Some(text);
            }
            self.keep_event(&text);
        }
    }

    async fn next_text(&mut self, deadline: tokio::time::Instant) -> Option<String> {
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Text(text)) if text.as_str() == "2" => {
                    self.send(String::from("3")).await;
                }
                Ok(Message::Text(text)) => return Some(text.as_str().to_owned()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    fn keep_event(&mut self, text: &str) {
        let Some(payload) = text.strip_prefix("42") else {
            return;
        };
        if let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(payload)
            && let Some(name) = parts.first().and_then(Value::as_str)
        {
            let data = parts.get(1).cloned().unwrap_or(Value::Null);
            self.events.push_back((name.to_owned(), data));
        }
    }

    /// The next event named `name` within `wait` (other events stay queued).
    async fn event(&mut self, name: &str, wait: Duration) -> Option<Value> {
        if let Some(index) = self.events.iter().position(|(event, _)| event == name) {
            return self.events.remove(index).map(|(_, data)| data);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let text = self.next_text(deadline).await?;
            self.keep_event(&text);
            if self.events.back().is_some_and(|(event, _)| event == name) {
                return self.events.pop_back().map(|(_, data)| data);
            }
        }
    }
}

#[tokio::test]
async fn a_socketio_client_gets_what_it_missed_when_it_joins() {
    let stack = stack().await;
    let (mut seeker, provider, session_id, _) = stack.session("seek1", "prov1").await;
    provider.close().await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(say(&mut seeker, &session_id, text).await);
    }

    // The provider's seed-004 front-end: connected, not yet in the room, it is shown nothing.
    let mut front_end = SocketIoClient::connect(&stack, "prov1", Role::Provider).await;
    assert!(
        front_end
            .event("new_message", Duration::from_millis(700))
            .await
            .is_none(),
        "no chat before the room is joined"
    );
    front_end
        .emit("join_chat", json!({"chatId": session_id}))
        .await;
    assert!(
        front_end
            .event("joined_chat", Duration::from_secs(10))
            .await
            .is_some()
    );
    // Joining brings what it missed there, oldest first, as the room's own messages.
    for (message, text) in sent.iter().zip(["one", "two", "three"]) {
        let shown = front_end
            .event("new_message", Duration::from_secs(10))
            .await
            .expect("a missed message is shown after the join");
        assert_eq!(shown["id"], message["message_id"]);
        assert_eq!(shown["chatId"], session_id.as_str());
        assert_eq!(shown["senderRole"], "seeker");
        assert_eq!(shown["message"], text);
    }
    // Shown, so marked delivered on the client's behalf (its protocol has no receipt)...
    let delivered = stack
        .count_until(
            "SELECT count(*) FROM chat_messages
             WHERE sender_type = 'seeker' AND delivery_status = 'delivered'",
            3,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(delivered, 3);
    // ...and not sent again to the next join.
    let mut again = SocketIoClient::connect(&stack, "prov1", Role::Provider).await;
    again.emit("join_chat", json!({"chatId": session_id})).await;
    assert!(
        again
            .event("joined_chat", Duration::from_secs(10))
            .await
            .is_some()
    );
    assert!(
        again
            .event("new_message", Duration::from_millis(700))
            .await
            .is_none(),
        "what was delivered is not re-sent"
    );
}
