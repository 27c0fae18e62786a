//! The HTTP server: the gateway's router on hyper, with what `axum::serve` lacks (contract section
//! 12). A connection that has not sent complete request headers within `HEADER_READ_TIMEOUT` is
//! closed, so a script that opens connections and trickles bytes cannot hold them for ever; and
//! the gateway holds at most `GATEWAY_MAX_CONNECTIONS` connections (HTTP connections and open
//! sockets together): past it, a new connection is closed at once, before it costs anything.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;

/// How long a connection may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts a connection while its HTTP part lasts.
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the HTTP connections in
/// progress to finish (upgraded sockets are closed by their own tasks). `open_sockets` says how
/// many upgraded sockets are open; with the HTTP connections in progress they make the count
/// held against `max_connections`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    max_connections: usize,
    open_sockets: impl Fn() -> usize,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let graceful = GracefulShutdown::new();
    let in_progress = Arc::new(AtomicUsize::new(0));
    let refused = metrics::counter!("gateway_connections_refused_total");
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: let some close before accepting more.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if in_progress.load(Ordering::Relaxed) + open_sockets() >= max_connections {
            refused.increment(1);
            drop(stream);
            continue;
        }
        in_progress.fetch_add(1, Ordering::Relaxed);
        let held = Held(in_progress.clone());
        let _ = stream.set_nodelay(true);
        let router = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            router.clone().oneshot(request)
        });
        let connection = graceful.watch(
            builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned(),
        );
        tokio::spawn(async move {
            let _ = connection.await;
            drop(held);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
