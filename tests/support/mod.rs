//! Test plumbing: a [`TestStack`] that starts a real nats-server, a fresh Postgres database, the
//! gateway and the workers as separate processes on free ports, and a WebSocket [`Client`] with
//! `send` / `expect`. Tests talk to the system only as clients (and, for tracing checks, as a NATS
//! subscriber), like the mobile apps and an operator would.

pub mod client;
pub mod proxy;
pub mod resilient;
pub mod stack;
pub mod webhooks;

pub use client::Client;
pub use stack::{NatsUser, Reply, StackOptions, TestStack};

/// The `seq` of the parties' first chat message: the session's start writes a system message
/// with seq 1 (contract section 9).
pub const FIRST_SEQ: i64 = 2;
