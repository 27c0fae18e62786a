//! System tests: the real gateway, workers, nats-server and Postgres, driven as clients.

mod gateway;
mod lifecycle;
