//! HTTPS for the gateway (feature `tls`): its server configuration and listener.
//!
//! The gateway serves TLS on its one port when its configuration has a `[tls]` table
//! ([`crate::TlsConfig`]); the clients of `funcx-client` then dial it with `https://` URLs
//! (whom they trust: `funcx_client::tls`).
//!
//! PEM files are read and rustls configurations built by `funcx_transport::tls`, as for the
//! manager connections: rustls with its `ring` provider, named by every configuration.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use funcx_transport::tls::{load_certificates, load_private_key};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info};

use crate::error::GatewayError;

/// The rustls version this crate builds on, for configurations made by hand.
pub use rustls;

/// How long a client may take to finish its TLS handshake before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many TLS handshakes may be in progress at once; beyond that the listener stops
/// accepting TCP connections until some finish, so that a flood of silent connections costs
/// bounded memory.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The transport's TLS loading, with its error as the gateway's.
fn tls_error(error: funcx_transport::TransportError) -> GatewayError {
    GatewayError::Tls(error.to_string())
}

/// The server configuration of a gateway presenting the certificate chain in `cert` (PEM,
/// leaf first) with the private key in `key` (PEM: PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, GatewayError> {
    let chain = load_certificates(cert).map_err(tls_error)?;
    let key = load_private_key(key).map_err(tls_error)?;
    let mut config = funcx_transport::tls::server_config(chain, key).map_err(tls_error)?;
    // Only HTTP/1.1 is served (the endpoints' upgrade needs it); saying so lets a client
    // that offers h2 settle on HTTP/1.1 instead of guessing.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that hands axum TLS streams: [`axum::serve()`] over HTTPS.
///
/// Each accepted connection gets `TCP_NODELAY` and then its TLS handshake, with
/// [`HANDSHAKE_TIMEOUT`]. Handshakes run concurrently with accepting, so a slow or silent
/// client delays nobody else; a failed one (a plain-HTTP request to the HTTPS port, an
/// untrusted client, a timeout) is logged and skipped, never ending the accept loop.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: FuturesUnordered<futures::future::BoxFuture<'static, Handshake>>,
}

type Handshake = (SocketAddr, io::Result<TlsStream<TcpStream>>);

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local_addr", &self.tcp.local_addr().ok())
            .field("pending_handshakes", &self.handshakes.len())
            .finish()
    }
}

impl TlsListener {
    /// Serves TLS with `config` on the connections `tcp` accepts.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: FuturesUnordered::new(),
        }
    }

    fn start_handshake(&mut self, stream: TcpStream, peer: SocketAddr) {
        // Before the handshake: its flights are small writes that Nagle would hold back.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY on a gateway connection");
        }
        let accept = self.acceptor.accept(stream);
        self.handshakes.push(Box::pin(async move {
            let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
                )),
            };
            (peer, result)
        }));
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Both branches are cancel-safe: a connection accepted is pushed at once, and a
            // finished handshake is only taken out of the set when it is returned.
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_PENDING_HANDSHAKES => {
                    match accepted {
                        Ok((stream, peer)) => self.start_handshake(stream, peer),
                        Err(error) => accept_error(error).await,
                    }
                }
                Some((peer, result)) = self.handshakes.next(), if !self.handshakes.is_empty() => {
                    match result {
                        Ok(stream) => return (stream, peer),
                        // Info, not warn: scanners and plain-HTTP clients cause these routinely,
                        // yet an operator chasing a misconfigured endpoint needs to see them.
                        Err(error) => info!(%peer, %error, "TLS handshake failed; connection dropped"),
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own TCP listener does: errors of one connection are ignored; others (out of
/// file descriptors) are logged and followed by a pause so the loop does not spin.
async fn accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    error!(%error, "could not accept a connection; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
