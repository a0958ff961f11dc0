//! The gateway's HTTP server ([`Gateway::serve`] and its variants): the router on hyper's
//! HTTP/1 connections, with the two limits `axum::serve` does not set: a deadline for a request's headers (hyper has the setting but
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
use tracing::{debug, info, warn};

use crate::{Gateway, GatewayError};

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

impl Gateway {
    /// Serves the API (and the endpoints' connections) on `listener` until the future is
    /// dropped or the listener fails: HTTPS when the configuration has a `[tls]` table,
    /// plain HTTP otherwise.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        self.serve_with(listener, std::future::pending()).await
    }

    /// Serves until `stop` resolves, then stops accepting and waits for the connections
    /// under way (result streams end when the gateway is closing).
    async fn serve_with(
        &self,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let limits = crate::serve::Limits {
            max_connections: self.inner.config.max_connections,
            header_read_timeout: Duration::from_secs(self.inner.config.header_read_timeout_secs),
        };
        #[cfg(feature = "tls")]
        if let Some(config) = &self.inner.tls {
            // The TLS listener sets TCP_NODELAY itself, before the handshake.
            let listener = crate::tls::TlsListener::new(listener, config.clone());
            crate::serve::serve(listener, self.router(), limits, stop).await;
            return Ok(());
        }
        // Without TCP_NODELAY, Nagle's algorithm meets the client's delayed ACK and a lone
        // small response waits ~40 ms: a single round trip cost 41 ms before this.
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "could not set TCP_NODELAY on a gateway connection");
            }
        });
        crate::serve::serve(listener, self.router(), limits, stop).await;
        Ok(())
    }

    /// Serves like [`Gateway::serve`] until `stop` resolves, then stops gracefully: no new
    /// connections, requests under way finish (a submission being stored is answered),
    /// result streams end (clients reconnect with back-off, to this gateway's successor),
    /// and the store is closed cleanly ([`Gateway::close`]). Endpoint connections close with
    /// the process; endpoints reconnect and resume their sessions with the next run.
    ///
    /// It does not bound the time itself: the `funcx-gateway` binary gives up after
    /// [`GatewayConfig::shutdown_grace`](crate::GatewayConfig::shutdown_grace).
    pub async fn serve_until(
        &self,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let closing = self.inner.closing.clone();
        let stop = async move {
            stop.await;
            info!("stopping: no new connections; closing result streams");
            closing.send_replace(true);
        };
        self.serve_with(listener, stop).await?;
        self.close().await
    }

    /// Serves until the process gets `SIGTERM` or `SIGINT` (Ctrl-C), then stops gracefully
    /// ([`Gateway::serve_until`]) within [`GatewayConfig::shutdown_grace`](crate::GatewayConfig::shutdown_grace); a second
    /// signal ends the process at once (exit status 130). For a program's `main`: the
    /// `funcx-gateway` binary and `examples/gateway.rs` are this.
    pub async fn serve_until_signalled(
        &self,
        listener: tokio::net::TcpListener,
    ) -> Result<(), GatewayError> {
        let grace = self.inner.config.shutdown_grace();
        let (signalled, stopping) = tokio::sync::oneshot::channel();
        let stop = async move {
            crate::signal::stop_signal().await;
            let _ = signalled.send(());
        };
        let serving = self.serve_until(listener, stop);
        tokio::pin!(serving);
        tokio::select! {
            served = &mut serving => return served,
            Ok(()) = stopping => {}
        }
        tokio::time::timeout(grace, serving)
            .await
            .map_err(|_| GatewayError::StopTimedOut(grace))?
    }

    /// Stops the gateway's own work and closes the store cleanly: result streams end, and
    /// the store waits for the writes under way. Every result already acknowledged to an
    /// endpoint is in the store; others stay with their endpoint until the next run.
    pub async fn close(&self) -> Result<(), GatewayError> {
        self.inner.closing.send_replace(true);
        self.inner.store.close().await?;
        info!("the store is closed");
        Ok(())
    }

    /// Whether [`Gateway::serve`] serves HTTPS (the configuration has a `[tls]` table).
    pub fn is_tls(&self) -> bool {
        self.inner.config.tls.is_some()
    }

    /// Binds the configured address and serves the API on it; see [`Gateway::serve`].
    pub async fn bind_and_serve(&self) -> Result<(), GatewayError> {
        let listener = tokio::net::TcpListener::bind(self.inner.config.listen).await?;
        let scheme = if self.is_tls() { "https" } else { "http" };
        info!(address = %listener.local_addr()?, scheme, "gateway listening");
        Ok(self.serve(listener).await?)
    }
}
