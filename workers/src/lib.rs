//! The worker kinds, each its own binary in `src/bin/`, and what they share: the JetStream frame
//! runtime (`runtime`), the REST request runtime (`api_server`), event delivery (`outbox`) and
//! session access (`session`).
//!
//! To find the handler of a message type, open the worker's `mod.rs`: it maps every subject and
//! frame type to one module.

pub mod api_server;
pub mod chat;
pub mod closed_sessions;
pub mod connections;
pub mod distance;
pub mod expiry;
pub mod lease;
pub mod lifecycle;
pub mod mediums;
pub mod notify;
pub mod outbox;
pub mod rendezvous;
pub mod runtime;
pub mod session;
pub mod startup;
pub mod system_messages;
pub mod users;
pub mod webhook_events;
