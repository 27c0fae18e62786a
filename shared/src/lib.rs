//! Code common to the gateway and every worker: the typed frames of the contract, the NATS subject
//! map, JWT checks, webhook signatures, NATS/JetStream and Postgres start-up checks, configuration and telemetry.
//!
//! Anything two processes must agree on lives here, in one place each, so that a frame or a
//! subject is found by name.

pub mod api;
pub mod auth;
pub mod config;
pub mod db;
pub mod frames;
pub mod geo;
pub mod headers;
pub mod nats;
pub mod rest;
pub mod subjects;
pub mod telemetry;
pub mod time;
pub mod webhooks;
