//! The gateway's HTTP server: the router on hyper's HTTP/1 connections, with the two limits
//! `axum::serve` does not set: a deadline for a request's headers (hyper has the setting but
//! needs a timer, which `axum::serve` does not give it) and a bound on open connections.
//!
//! Otherwise it serves as `axum::serve` does: one task per connection, upgrades (the
//! endpoints' route), the peer's address as [`ConnectInfo`], and a graceful stop that stops
//! accepting and lets each connection finish its request under way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;
use tracing::{debug, warn};

/// The limits of [`serve`], from the gateway's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub(crate) header_read_timeout: Duration,
}

/// Serves `router` on the connections `listener` accepts until `stop` resolves, then stops
/// accepting and waits for the connections to finish (each is asked to close after its
/// request under way).
pub(crate) async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener<Addr = SocketAddr>,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Dropped to tell every connection to close gracefully; each connection holds a
    // receiver of `closed`, so that `closed_tx.closed()` resolves when all are gone.
    let (stopping_tx, stopping_rx) = watch::channel(());
    let (closed_tx, closed_rx) = watch::channel(());
    let mut stop = std::pin::pin!(stop);
    let mut warned_full = false;
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; if it were, serving could not go on.
                Err(_) => break,
            },
        };
        if permits.available_permits() == 0 && !warned_full {
            warn!(
                max_connections = limits.max_connections,
                "the gateway serves max_connections connections; new ones wait until one closes"
            );
            warned_full = true;
        } else if permits.available_permits() > limits.max_connections / 10 {
            warned_full = false;
        }
        let (io, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let service = router.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(axum::body::Body::new)
            },
        );
        let mut stopping = stopping_rx.clone();
        let closed = closed_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _closed = closed;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service),
            );
            let mut connection = std::pin::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                debug!(%peer, %error, "a connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stopping_tx);
    drop(closed_rx);
    closed_tx.closed().await;
}
