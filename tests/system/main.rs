//! System tests: the real gateway, workers, nats-server and Postgres, driven as clients.

mod abuse;
mod arrival;
mod authorization;
mod chat;
mod conversations;
mod dialects;
mod disputes;
mod distance;
mod gateway;
mod lifecycle;
mod limits;
mod mediums;
mod operations;
mod presence;
mod resends;
mod rest_documents;
mod runtime;
mod webhooks;
mod work_orders_abuse;
