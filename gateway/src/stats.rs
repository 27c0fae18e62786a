//! What an operator reads: `/health` (is NATS there), `/api/websocket/stats` (this instance's
//! sockets and frame counts) and `/metrics` (Prometheus).

use crate::SharedState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use shared::auth::Role;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Stats {
    started: Instant,
    seekers: AtomicI64,
    providers: AtomicI64,
    mediators: AtomicI64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    metrics: PrometheusHandle,
    // Handles looked up once: the per-frame path does no registry lookups.
    frames_in_total: metrics::Counter,
    frames_out_total: metrics::Counter,
    /// Time from a frame's publish to its JetStream ack (durable topics) or its hand-off (core).
    pub publish_durable: metrics::Histogram,
    pub publish_core: metrics::Histogram,
}

pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ])?
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            ticker.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

impl Stats {
    pub fn new(metrics: PrometheusHandle) -> Stats {
        Stats {
            started: Instant::now(),
            seekers: AtomicI64::new(0),
            providers: AtomicI64::new(0),
            mediators: AtomicI64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            metrics,
            frames_in_total: metrics::counter!("gateway_frames_in_total"),
            frames_out_total: metrics::counter!("gateway_frames_out_total"),
            publish_durable: metrics::histogram!("gateway_publish_seconds", "durable" => "true"),
            publish_core: metrics::histogram!("gateway_publish_seconds", "durable" => "false"),
        }
    }

    fn by_role(&self, role: Role) -> &AtomicI64 {
        match role {
            Role::Seeker => &self.seekers,
            Role::Provider => &self.providers,
            Role::Mediator => &self.mediators,
        }
    }

    pub fn connection_opened(&self, role: Role) {
        self.by_role(role).fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("gateway_connections", "role" => role.as_str()).increment(1.0);
    }

    pub fn connection_closed(&self, role: Role) {
        self.by_role(role).fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("gateway_connections", "role" => role.as_str()).decrement(1.0);
    }

    pub fn frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.frames_in_total.increment(1);
    }

    pub fn frame_out(&self) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
        self.frames_out_total.increment(1);
    }

    /// A REST call refused by the caller's rate limit (429).
    pub fn rest_limited(&self) {
        metrics::counter!("gateway_rest_limited_total").increment(1);
    }

    pub fn connections(&self) -> i64 {
        self.seekers.load(Ordering::Relaxed)
            + self.providers.load(Ordering::Relaxed)
            + self.mediators.load(Ordering::Relaxed)
    }
}

/// `/health`'s answer.
#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct Health {
    /// `ok`, or `degraded` while NATS is away.
    pub status: String,
    /// `connected` or `disconnected`.
    pub nats: String,
    /// Sockets open on this gateway.
    pub connections: i64,
}

/// `/api/websocket/stats`' answer.
#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct SocketStats {
    pub connections: i64,
    /// Users with at least one socket here.
    pub users: usize,
    pub by_role: SocketsByRole,
    pub uptime_secs: u64,
    pub frames_in: u64,
    pub frames_out: u64,
}

#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct SocketsByRole {
    pub seeker: i64,
    pub provider: i64,
    pub mediator: i64,
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Whether this gateway runs and reaches NATS (a load balancer's probe)",
    responses(
        (status = 200, description = "running, NATS connected", body = Health),
        (status = 503, description = "running, NATS away", body = Health),
    )
)]
pub async fn health(State(state): State<SharedState>) -> impl IntoResponse {
    let connected = matches!(
        state.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let connections = state.stats.connections();
    let (status, health, nats) = if connected {
        (StatusCode::OK, "ok", "connected")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "degraded", "disconnected")
    };
    (
        status,
        Json(Health {
            status: health.to_owned(),
            nats: nats.to_owned(),
            connections,
        }),
    )
}

#[utoipa::path(
    get,
    path = "/api/websocket/stats",
    tag = "operations",
    summary = "This gateway's sockets and frames so far",
    responses((status = 200, description = "the counts", body = SocketStats))
)]
pub async fn websocket_stats(State(state): State<SharedState>) -> impl IntoResponse {
    let stats = &state.stats;
    Json(SocketStats {
        connections: stats.connections(),
        users: state.registry.users(),
        by_role: SocketsByRole {
            seeker: stats.seekers.load(Ordering::Relaxed),
            provider: stats.providers.load(Ordering::Relaxed),
            mediator: stats.mediators.load(Ordering::Relaxed),
        },
        uptime_secs: stats.started.elapsed().as_secs(),
        frames_in: stats.frames_in.load(Ordering::Relaxed),
        frames_out: stats.frames_out.load(Ordering::Relaxed),
    })
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "This gateway's metrics, for Prometheus",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.stats.metrics.render(),
    )
}
