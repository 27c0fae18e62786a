//! The WebSocket gateway: authenticates clients, forwards their frames to NATS and NATS events to
//! their sockets, and forwards REST calls as NATS requests. It holds no business rules and never
//! opens a database connection, so it can run as many copies as sockets require.

mod auth;
mod dev;
mod docs;
mod presence;
mod registry;
mod rest;
mod rest_limit;
mod routes;
mod server;
mod socket;
mod socket_queue;
mod socketio;
mod stats;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use clap::Parser;
use shared::config::{JwtConfig, NatsConfig};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "gateway",
    about = "WebSocket + REST gateway: auth, sockets, NATS"
)]
pub struct Config {
    /// Address to listen on (HTTP and WebSocket on one port).
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_addr: String,
    #[command(flatten)]
    pub nats: NatsConfig,
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// Send a WebSocket ping to a socket that has been silent this long.
    #[arg(long, env = "WS_PING_SECS", default_value_t = 25)]
    pub ws_ping_secs: u64,
    /// Close a socket that has been silent this long (a dead phone), with 1001.
    #[arg(long, env = "WS_IDLE_TIMEOUT_SECS", default_value_t = 70)]
    pub ws_idle_timeout_secs: u64,
    /// Events queued for one socket before the client counts as too slow and is disconnected.
    #[arg(long, env = "WS_OUTBOUND_QUEUE", default_value_t = 256)]
    pub ws_outbound_queue: usize,
    /// A socket whose writes stall this long (the client stopped reading) is dropped.
    #[arg(long, env = "WS_SEND_TIMEOUT_SECS", default_value_t = 10)]
    pub ws_send_timeout_secs: u64,
    /// Frames a socket may send per second, sustained (`ping` never counts; contract section 7).
    #[arg(long, env = "WS_RATE_PER_SEC", default_value_t = 20.0)]
    pub ws_rate_per_sec: f64,
    /// Frames a socket may send in a burst.
    #[arg(long, env = "WS_RATE_BURST", default_value_t = 40.0)]
    pub ws_rate_burst: f64,
    /// `typing_indicator` frames forwarded per second and socket; the ones between are coalesced.
    #[arg(long, env = "WS_RATE_TYPING_PER_SEC", default_value_t = 2.0)]
    pub ws_rate_typing_per_sec: f64,
    /// `location_update` frames forwarded per second and socket; the ones between are coalesced.
    #[arg(long, env = "WS_RATE_LOCATION_PER_SEC", default_value_t = 1.0)]
    pub ws_rate_location_per_sec: f64,
    /// A socket whose frames stay over the limit this long is closed with 1008.
    #[arg(long, env = "WS_RATE_CLOSE_SECS", default_value_t = 10)]
    pub ws_rate_close_secs: u64,
    /// Sockets one user may hold on this gateway; one more upgrade is answered 429.
    #[arg(long, env = "WS_MAX_SOCKETS_PER_USER", default_value_t = 10)]
    pub ws_max_sockets_per_user: usize,
    /// Folder of the web client served at `/`.
    /// Bytes of frames a socket may send a second (bursts of four times that); past it, frames
    /// are answered "rate limit exceeded" like any over the frame limit.
    #[arg(long, env = "WS_RATE_BYTES_PER_SEC", default_value_t = 65536.0)]
    pub ws_rate_bytes_per_sec: f64,
    /// Connections this gateway holds at most (HTTP connections in progress and open sockets);
    /// past it a new connection is closed at once.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = 25000)]
    pub max_connections: usize,
    /// REST calls a user may make a second, all routes together (bursts of twice that; 0: no
    /// limit).
    #[arg(long, env = "GATEWAY_REST_RATE_PER_SEC", default_value_t = 10.0)]
    pub rest_rate_per_sec: f64,
    /// Sockets announced again a second after the NATS connection comes back (each makes the
    /// workers look up what the socket missed): paced, so a gateway of 100,000 sockets does not
    /// put them all on the workers at once.
    #[arg(long, env = "GATEWAY_REANNOUNCE_PER_SEC", default_value_t = 2000)]
    pub reannounce_per_sec: u32,
    #[arg(long, env = "WEB_ROOT", default_value = "web")]
    pub web_root: String,
    /// Web origins whose pages may call the REST API and Socket.IO's long-polling from the browser
    /// (comma-separated, e.g. `https://app.example.com`): the neighbouring systems' front-ends are
    /// served from origins of their own. Empty: no cross-origin access.
    #[arg(long, env = "GATEWAY_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Development only: mint demo tokens at `POST /dev/token` and receive webhooks at
    /// `POST /dev/webhooks` for the web page's notifications (`dev.rs`). Never in production.
    #[arg(long, env = "GATEWAY_DEV_MODE", default_value = "false", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub dev_mode: bool,
    /// Development mode only: the notify worker's `WEBHOOK_SECRET` (`whsec_...`, two
    /// space-separated while rotating), which the development receiver verifies webhooks with.
    /// Unset: that receiver refuses them (503).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Print the OpenAPI document of the REST routes and exit (for client generators).
    #[arg(long)]
    pub print_openapi: bool,
}

/// What every request handler and socket task shares.
pub struct AppState {
    pub config: Config,
    pub nats: async_nats::Client,
    pub jetstream: async_nats::jetstream::Context,
    pub verifier: shared::auth::TokenVerifier,
    pub registry: registry::Registry,
    pub stats: stats::Stats,
    /// Per-user REST token buckets.
    pub rest_limit: rest_limit::RestLimit,
    /// Turns true on SIGTERM / Ctrl-C: every socket publishes what it read, closes with 1012.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Development mode's webhook receiver (unused, and unrouted, otherwise).
    pub dev_inbox: dev::Inbox,
}

pub type SharedState = Arc<AppState>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if config.print_openapi {
        println!("{}", docs::document().to_pretty_json()?);
        return Ok(());
    }
    shared::telemetry::init("gateway");
    if !config.dev_mode
        && let Some(weakness) = config.jwt.weakness()
    {
        anyhow::bail!(
            "{weakness}: anyone who knows it can sign tokens as any user. Set JWT_SECRET to a random \
             secret of at least {} bytes (`openssl rand -hex 32`), or run with GATEWAY_DEV_MODE=1 on \
             a development machine",
            shared::config::JWT_SECRET_MIN_BYTES
        );
    }
    // Only development mode's receiver reads the webhook secret; a wrong one stops the start.
    let webhook_signer = match (&config.webhook_secret, config.dev_mode) {
        (Some(secret), true) if !secret.trim().is_empty() => Some(
            shared::webhooks::Signer::parse(secret)
                .map_err(|error| anyhow::anyhow!("WEBHOOK_SECRET: {error}"))?,
        ),
        _ => None,
    };
    let (nats, reconnects) =
        shared::nats::connect_watching_reconnects(&config.nats.nats_url, "gateway").await?;
    let metrics = stats::install_metrics()?;
    let state = Arc::new(AppState {
        jetstream: async_nats::jetstream::new(nats.clone()),
        verifier: shared::auth::TokenVerifier::new(&config.jwt.jwt_secret),
        registry: registry::Registry::new(nats.clone()),
        stats: stats::Stats::new(metrics),
        rest_limit: rest_limit::RestLimit::new(config.rest_rate_per_sec),
        shutdown: tokio::sync::watch::Sender::new(false),
        dev_inbox: dev::Inbox::new(webhook_signer),
        nats,
        config: config.clone(),
    });
    if config.dev_mode {
        tracing::warn!(
            "DEVELOPMENT MODE: anyone can mint tokens at POST /dev/token. Never run this in production."
        );
        if state.dev_inbox.refuses() {
            tracing::info!(
                "no WEBHOOK_SECRET: the development webhook receiver (POST /dev/webhooks) refuses webhooks"
            );
        }
    }
    tokio::spawn(announce_after_reconnects(state.clone(), reconnects));
    let (socketio_layer, socketio) = socketio::layer(state.clone());
    let mut app = router(state.clone()).layer(socketio_layer);
    if let Some(cors) = cors_layer(&config.cors_origins)? {
        app = app.layer(cors);
    }
    let listener = tokio::net::TcpListener::bind(&config.gateway_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.gateway_addr))?;
    tracing::info!(addr = %config.gateway_addr, "gateway listening");
    let stopping = state.clone();
    let counting = state.clone();
    server::serve(
        listener,
        app,
        config.max_connections,
        move || counting.stats.connections().max(0) as usize,
        async move {
            shutdown_signal().await;
            stopping.shutdown.send_replace(true);
            // Socket.IO's long-polling requests end with their sockets.
            socketio.close().await;
        },
    )
    .await;
    // Upgraded sockets outlive the HTTP server: wait for each to have closed with 1012 (its
    // in-flight frames published first), so a deploy drops nobody without a close frame.
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while state.stats.connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = state.stats.connections();
    if left > 0 {
        tracing::warn!(
            sockets = left,
            "sockets still open at the end of the shutdown grace"
        );
    }
    if let Err(error) = state.nats.flush().await {
        tracing::warn!(%error, "cannot flush NATS before exiting");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Cross-origin access for the configured web origins: their pages may send the token as a header
/// or a cookie.
fn cors_layer(origins: &[String]) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use axum::http::{HeaderValue, Method, header};
    let origins = origins
        .iter()
        .map(|origin| origin.trim())
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            HeaderValue::from_str(origin)
                .with_context(|| format!("GATEWAY_CORS_ORIGINS: {origin:?} is not a valid origin"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PUT])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .allow_credentials(true),
    ))
}

/// Events published while this gateway's NATS connection was down are lost (core NATS): when it
/// comes back, every socket is announced again, and the workers re-send what a socket may have
/// missed (undelivered chat messages, pending work orders). The pause lets workers that lost the
/// same server resubscribe first.
async fn announce_after_reconnects(
    state: SharedState,
    mut reconnects: tokio::sync::watch::Receiver<u64>,
) {
    reconnects.borrow_and_update();
    while reconnects.changed().await.is_ok() {
        tokio::time::sleep(REANNOUNCE_AFTER).await;
        reconnects.borrow_and_update();
        state.registry.restate_presence();
        let sockets = state.registry.sockets();
        tracing::info!(
            sockets = sockets.len(),
            "NATS is back: announcing every socket again"
        );
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        let per_tick = (state.config.reannounce_per_sec / 10).max(1) as usize;
        for chunk in sockets.chunks(per_tick) {
            pace.tick().await;
            for (identity, conn_id) in chunk {
                socket::announce(&state, identity, conn_id).await;
            }
        }
    }
}

const REANNOUNCE_AFTER: Duration = Duration::from_secs(2);

/// How long a stopping gateway waits for its sockets to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn router(state: SharedState) -> Router {
    let web = tower_http::services::ServeDir::new(&state.config.web_root);
    let mut router = Router::new();
    if state.config.dev_mode {
        router = router
            .route("/dev/token", post(dev::mint_token))
            .route("/dev/webhooks", post(dev::receive_webhook))
            .route("/dev/notifications", get(dev::notifications));
    }
    router
        .route("/health", get(stats::health))
        .route("/docs", get(docs::index))
        .route("/docs/", get(docs::index))
        .route("/docs/openapi.json", get(docs::openapi_json))
        .route("/docs/asyncapi.yaml", get(docs::asyncapi_yaml))
        .route("/api/websocket/stats", get(stats::websocket_stats))
        .route("/metrics", get(stats::metrics))
        .route("/ws/work/provider", get(socket::provider_upgrade))
        .route("/ws/work/provider/", get(socket::provider_upgrade))
        .route("/ws/work/seeker", get(socket::seeker_upgrade))
        .route("/ws/work/seeker/", get(socket::seeker_upgrade))
        .route(
            "/ws/chat/{conversation_id}",
            get(socket::conversation_upgrade),
        )
        .route(
            "/ws/chat/{conversation_id}/",
            get(socket::conversation_upgrade),
        )
        .route("/ws/work/mediator", get(socket::mediator_upgrade))
        .route("/ws/work/mediator/", get(socket::mediator_upgrade))
        .merge(rest::router())
        .fallback_service(web)
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
