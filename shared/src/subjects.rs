//! The NATS subject map (contract section 5), in one place. Every subject the system publishes or
//! subscribes to is built or parsed here.
//!
//! | subject | from -> to |
//! |---|---|
//! | `session.<session_id>.<topic>` | gateway -> workers (topic: chat, receipt, typing, location, mediums, lifecycle) |
//! | `message.<message_id>.receipt` | gateway -> chat |
//! | `work.<work_id>.response` | gateway -> lifecycle |
//! | `user.<user_id>.events` | workers -> gateway |
//! | `user.<user_id>.connected` | gateway -> lifecycle (a socket opened: replay pending orders) |
//! | `session.<session_id>.ended` | lifecycle -> distance, chat (the session was cancelled or finished) |
//! | `session.<session_id>.changed` | lifecycle -> chat (a mediator joined or left: its participants changed) |
//! | `session.<session_id>.joined` | gateway -> chat (a Socket.IO socket joined the session's room: re-send it what it missed there) |
//! | `api.<resource>.<verb>` | gateway -> workers, request/reply |
//!
//! In the `INBOUND` stream every inbound subject gains a fourth token, its partition: the stream's
//! subject transform (`nats/stream-inbound.json`) turns `session.<id>.chat` into
//! `session.<id>.chat.<p>` with `p = fnv1a32(<id>) % PARTITIONS`, so all frames of one session (or
//! one message, one work order) land in one partition, which one worker instance applies in order.
//! Publishers and core-NATS subscribers never see that token.
//!
//! Ids only reach a subject after validation (UUIDs, integers, `[A-Za-z0-9_-]{1,64}` user ids), so
//! no client can put `.`, `*` or `>` into one.

use uuid::Uuid;

/// The JetStream stream that captures every durable inbound subject.
pub const INBOUND_STREAM: &str = "INBOUND";

/// How many partitions the `INBOUND` stream's subject transform spreads frames over. It must match
/// `{{partition(8,2)}}` in `nats/stream-inbound.json`; changing it needs a drained stream.
pub const PARTITIONS: u32 = 8;

/// The partition the stream's subject transform gives a subject whose id token is `id`
/// (nats-server hashes the token with FNV-1a 32, then takes it modulo the partition count).
pub fn partition_of(id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in id.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % PARTITIONS
}

/// The second token of a `session.<id>.<topic>` subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    /// `start_chat`, `chat_message`, `resume`.
    Chat,
    /// `message_delivered`, `message_read` that name their session.
    Receipt,
    /// `typing_indicator` (core NATS, not captured).
    Typing,
    /// `location_update` (core NATS, not captured: latest wins).
    Location,
    /// `medium_selection`, `medium_share`.
    Mediums,
    /// `cancel_connection`, `finish_service`.
    Lifecycle,
}

impl Topic {
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Chat => "chat",
            Topic::Receipt => "receipt",
            Topic::Typing => "typing",
            Topic::Location => "location",
            Topic::Mediums => "mediums",
            Topic::Lifecycle => "lifecycle",
        }
    }

    pub fn parse(token: &str) -> Option<Topic> {
        Some(match token {
            "chat" => Topic::Chat,
            "receipt" => Topic::Receipt,
            "typing" => Topic::Typing,
            "location" => Topic::Location,
            "mediums" => Topic::Mediums,
            "lifecycle" => Topic::Lifecycle,
            _ => return None,
        })
    }

    /// Durable topics go through JetStream (publish with ack); the others are core NATS, where
    /// the latest value wins and a lost one is replaced by the next.
    pub fn is_durable(self) -> bool {
        !matches!(self, Topic::Typing | Topic::Location)
    }
}

pub fn session(session_id: &Uuid, topic: Topic) -> String {
    format!("session.{session_id}.{}", topic.as_str())
}

/// All sessions' subjects of one topic, for subscriptions and consumer filters.
pub fn session_wildcard(topic: Topic) -> String {
    format!("session.*.{}", topic.as_str())
}

/// Announced (core NATS) after a session was cancelled or finished, so workers holding state for
/// it in memory drop it at once.
pub fn session_ended(session_id: &Uuid) -> String {
    format!("session.{session_id}.ended")
}

pub const SESSIONS_ENDED: &str = "session.*.ended";

/// A session's participants changed (a mediator joined a dispute, or left at its resolution):
/// caches of who is in it are dropped.
pub fn session_changed(session_id: &Uuid) -> String {
    format!("session.{session_id}.changed")
}

pub const SESSIONS_CHANGED: &str = "session.*.changed";

/// A Socket.IO socket joined the session's room (headers `user-id`, `role`, `conn-id`, as on a
/// frame): the chat worker sends that socket the session's messages not yet delivered to the
/// user. The re-send on connect came before the room existed, and the gateway shows a Socket.IO
/// client only the chat of the rooms it joined.
pub fn session_joined(session_id: &Uuid) -> String {
    format!("session.{session_id}.joined")
}

pub const SESSIONS_JOINED: &str = "session.*.joined";

/// The session id of a `session.<id>.<anything>` subject.
pub fn session_id_of(subject: &str) -> Option<Uuid> {
    let mut tokens = subject.split('.');
    match (tokens.next(), tokens.next()) {
        (Some("session"), Some(id)) => Uuid::parse_str(id).ok(),
        _ => None,
    }
}

pub fn message_receipt(message_id: &Uuid) -> String {
    format!("message.{message_id}.receipt")
}

pub const MESSAGE_RECEIPTS: &str = "message.*.receipt";

pub fn work_response(work_id: i64) -> String {
    format!("work.{work_id}.response")
}

pub const WORK_RESPONSES: &str = "work.*.response";

pub fn user_events(user_id: &str) -> String {
    format!("user.{user_id}.events")
}

/// Every user's events: a gateway subscribes to this once and routes by user in process.
pub const ALL_USER_EVENTS: &str = "user.*.events";

/// The user a `user.<id>.events` subject is for.
pub fn user_of_events(subject: &str) -> Option<&str> {
    subject
        .strip_prefix("user.")?
        .strip_suffix(".events")
        .filter(|user_id| !user_id.is_empty() && !user_id.contains('.'))
}

pub fn user_connected(user_id: &str) -> String {
    format!("user.{user_id}.connected")
}

pub const USERS_CONNECTED: &str = "user.*.connected";

/// What an inbound subject addresses, parsed back by the workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Session { session_id: Uuid, topic: Topic },
    MessageReceipt { message_id: Uuid },
    WorkResponse { work_id: i64 },
}

impl Address {
    /// Parses an inbound subject as published (`session.<id>.chat`) or as stored in `INBOUND`
    /// (`session.<id>.chat.<partition>`).
    pub fn parse(subject: &str) -> Option<Address> {
        let mut tokens = subject.split('.');
        let (kind, id, last) = (tokens.next()?, tokens.next()?, tokens.next()?);
        if let Some(partition) = tokens.next()
            && partition.parse::<u32>().is_err()
        {
            return None;
        }
        if tokens.next().is_some() {
            return None;
        }
        match (kind, last) {
            ("session", topic) => Some(Address::Session {
                session_id: Uuid::parse_str(id).ok()?,
                topic: Topic::parse(topic)?,
            }),
            ("message", "receipt") => Some(Address::MessageReceipt {
                message_id: Uuid::parse_str(id).ok()?,
            }),
            ("work", "response") => Some(Address::WorkResponse {
                work_id: id.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Request/reply subjects of the REST routes (`api.<resource>.<verb>`).
pub mod api {
    pub const PROFILE_GET: &str = "api.profile.get";
    pub const PROFILE_PUT: &str = "api.profile.put";
    pub const PROVIDER_STATUS_GET: &str = "api.provider_status.get";
    pub const PROVIDER_STATUS_PUT: &str = "api.provider_status.put";
    pub const SEEKER_SEARCH_GET: &str = "api.seeker_search.get";
    pub const SEEKER_SEARCH_PUT: &str = "api.seeker_search.put";
    pub const WORK_ORDERS_CREATE: &str = "api.work_orders.create";
    pub const WORK_ORDERS_GET: &str = "api.work_orders.get";
    pub const SESSIONS_GET: &str = "api.sessions.get";
    pub const MESSAGES_LIST: &str = "api.messages.list";
    pub const SESSIONS_READ: &str = "api.sessions.read";
    pub const CONVERSATIONS_LIST: &str = "api.conversations.list";
    pub const DISPUTES_OPEN: &str = "api.disputes.open";
    pub const DISPUTES_LIST: &str = "api.disputes.list";
    pub const DISPUTES_GET: &str = "api.disputes.get";
    pub const DISPUTES_JOIN: &str = "api.disputes.join";
    pub const DISPUTES_RESOLVE: &str = "api.disputes.resolve";
}

/// Queue groups: every instance of a worker kind joins its kind's group, so each request or core
/// NATS frame is handled by exactly one instance.
pub mod queue {
    pub const LIFECYCLE: &str = "lifecycle";
    pub const CHAT: &str = "chat";
    pub const DISTANCE: &str = "distance";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_of_an_events_subject_is_read_back() {
        assert_eq!(user_of_events(&user_events("u-1_a")), Some("u-1_a"));
        assert_eq!(user_of_events("user..events"), None);
        assert_eq!(user_of_events("user.a.b.events"), None);
        assert_eq!(user_of_events("user.a.connected"), None);
    }

    #[test]
    fn session_subjects_round_trip() {
        let id = Uuid::new_v4();
        let subject = session(&id, Topic::Chat);
        assert_eq!(
            Address::parse(&subject),
            Some(Address::Session {
                session_id: id,
                topic: Topic::Chat
            })
        );
        assert_eq!(
            Address::parse("work.12.response"),
            Some(Address::WorkResponse { work_id: 12 })
        );
        assert_eq!(Address::parse("session.x.chat"), None);
        assert_eq!(Address::parse("work.1.response.extra"), None);
        assert_eq!(
            Address::parse(&format!("{subject}.7")),
            Address::parse(&subject)
        );
        assert_eq!(Address::parse("work.1.response.2.3"), None);
    }

    #[test]
    fn partitions_follow_nats_servers_fnv1a_hash() {
        // FNV-1a 32 reference values: "" -> 0x811c9dc5, "a" -> 0xe40c292c.
        assert_eq!(partition_of(""), 0x811c_9dc5 % PARTITIONS);
        assert_eq!(partition_of("a"), 0xe40c_292c % PARTITIONS);
        let id = Uuid::new_v4().to_string();
        assert_eq!(partition_of(&id), partition_of(&id));
        assert!(partition_of(&id) < PARTITIONS);
    }
}
