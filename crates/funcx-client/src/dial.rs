//! The endpoint's side of the connection: dial the gateway over HTTP (or HTTPS, feature
//! `tls`) and upgrade.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use funcx_transport::remote::{Dial, ToEndpoint, ToManager};
use funcx_transport::{Connection, TcpTransport, TransportError};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::model::UPGRADE_PROTOCOL;

/// The most bytes of response head read before giving up on a gateway's answer.
const MAX_HEAD: usize = 16 * 1024;
/// The most bytes of an error body kept for the error message.
const MAX_ERROR_BODY: usize = 1024;

/// Connects an endpoint to a gateway: `GET /v1/endpoints/{id}/connect` with the endpoint
/// token and an upgrade to `funcx-manager-protocol`, then the funcx handshake and manager
/// protocol on the same connection.
///
/// Hand it to `funcx_transport::remote::run_manager` with a runner of the endpoint's
/// workers: the endpoint becomes a manager of its queue in the gateway, reconnecting with
/// back-off when the connection drops.
///
/// ```no_run
/// use funcx_client::EndpointDial;
/// use funcx_transport::remote::{run_manager, EchoRunner, ManagerConfig, ManagerId, ManagerInfo};
///
/// # async fn demo() {
/// let dial = EndpointDial::new("gateway.example.org:8470", "3f0c…endpoint id", "endpoint token");
/// let info = ManagerInfo {
///     id: ManagerId(42),
///     block: None,
///     host: "laptop".into(),
///     pid: std::process::id(),
///     slots: 4,
///     gpus: vec![],
///     cores: None,
///     memory: None,
///     nodes: Vec::new(),
/// };
/// // EchoRunner stands in for real workers; use ExecutorRunner over a local Executor.
/// let exit = run_manager(dial, EchoRunner::new(4), ManagerConfig::new(info)).await;
/// println!("endpoint stopped: {exit}");
/// # }
/// ```
///
/// # TLS
///
/// With the `tls` feature, `gateway` may be an `https://host:port` URL: the connection is
/// then TLS from its first byte, and the certificate must be valid for `host` and signed by
/// a CA the dialler trusts: the Mozilla roots by default, or the CA file given to
/// [`EndpointDial::ca_file`] (a self-signed gateway).
///
/// # Several gateways
///
/// Gateways sharing one store (PostgreSQL) can each take the endpoint: name the others with
/// [`EndpointDial::failover`]. A dial tries the gateway that last answered first, then the
/// others in turn, so an endpoint whose gateway died reconnects to the next one, resuming its
/// session there (the gateway takes over the dead one's tasks when their claims lapse).
#[derive(Clone)]
pub struct EndpointDial {
    /// The gateways, in the order they are tried; at least one.
    targets: Vec<Target>,
    /// The index of the gateway that answered last, shared by clones (a manager's dials).
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    endpoint_id: String,
    token: String,
    transport: TcpTransport,
    /// Whom an `https` gateway must be certified by; `None` for the Mozilla roots.
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// One gateway to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `host:port`, for the TCP connection and the `Host` header.
    authority: String,
    /// A path prefix before `/v1/...` (a gateway behind a reverse proxy), without a final `/`.
    prefix: String,
    https: bool,
}

impl Target {
    /// `host:port`, `http://host:port[/prefix]` or `https://host:port[/prefix]`.
    fn parse(gateway: &str) -> Target {
        let (https, rest) = if let Some(rest) = gateway.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, gateway.strip_prefix("http://").unwrap_or(gateway))
        };
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        Target {
            authority: authority.to_owned(),
            prefix: prefix.to_owned(),
            https,
        }
    }
}

impl std::fmt::Debug for EndpointDial {
    // By hand: the token must not end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointDial")
            .field("targets", &self.targets)
            .field("endpoint_id", &self.endpoint_id)
            .finish_non_exhaustive()
    }
}

impl EndpointDial {
    /// Dials the gateway at `gateway` as endpoint `endpoint_id`, presenting `token`.
    ///
    /// `gateway` is `host:port`, `http://host:port[/prefix]`, or (feature `tls`)
    /// `https://host:port[/prefix]`.
    pub fn new(
        gateway: impl Into<String>,
        endpoint_id: impl Into<String>,
        token: impl Into<String>,
    ) -> EndpointDial {
        EndpointDial {
            targets: vec![Target::parse(&gateway.into())],
            current: Default::default(),
            endpoint_id: endpoint_id.into(),
            token: token.into(),
            transport: TcpTransport::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Adds `gateway` (same forms as [`EndpointDial::new`]) to the gateways dialled when the
    /// current one cannot be reached or refuses: another gateway on the same store.
    pub fn failover(mut self, gateway: impl Into<String>) -> EndpointDial {
        self.targets.push(Target::parse(&gateway.into()));
        self
    }

    /// Uses `transport`'s frame limit and handshake timeout for the upgraded connection (its
    /// token and TLS settings are not used: the endpoint token travels in the HTTP request,
    /// and TLS, if any, wraps the HTTP connection itself).
    pub fn transport(mut self, transport: TcpTransport) -> EndpointDial {
        self.transport = transport;
        self
    }

    /// Trusts the CA certificates in the PEM file `path` for an `https` gateway, instead of
    /// the Mozilla roots: the certificate of a self-signed gateway, or its private CA.
    ///
    /// Read now, so that a missing or malformed file is an error here rather than at every
    /// reconnection.
    #[cfg(feature = "tls")]
    pub fn ca_file(
        self,
        path: impl AsRef<std::path::Path>,
    ) -> Result<EndpointDial, TransportError> {
        Ok(self.tls_config(crate::tls::client_config(path.as_ref())?))
    }

    /// Uses a rustls configuration made by hand for an `https` gateway (client
    /// certificates, custom verification).
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> EndpointDial {
        self.tls = Some(config);
        self
    }

    /// Dials the gateway that answered last, then each other one in turn; the last
    /// failure if none takes the endpoint.
    async fn connect(&self) -> Result<Connection<ToEndpoint, ToManager>, TransportError> {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed) % self.targets.len();
        let mut failure = None;
        for step in 0..self.targets.len() {
            let index = (first + step) % self.targets.len();
            let target = &self.targets[index];
            match self.connect_to(target).await {
                Ok(connection) => {
                    if index != first {
                        tracing::info!(gateway = %target.authority, "the endpoint moved to another gateway");
                        self.current.store(index, Ordering::Relaxed);
                    }
                    return Ok(connection);
                }
                Err(error) => {
                    if self.targets.len() > 1 {
                        tracing::debug!(gateway = %target.authority, %error, "gateway not reached; trying the next");
                    }
                    failure = Some(error);
                }
            }
        }
        Err(failure.unwrap_or_else(|| {
            TransportError::from(io::Error::new(
                io::ErrorKind::NotFound,
                "no gateway to dial",
            ))
        }))
    }

    async fn connect_to(
        &self,
        target: &Target,
    ) -> Result<Connection<ToEndpoint, ToManager>, TransportError> {
        let timeout = self.transport.handshake_timeout();
        let opened = tokio::time::timeout(timeout, self.open(target))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the gateway did not answer within {timeout:?}"),
                )
            })??;
        match opened {
            Opened::Plain(stream, peer) => self.transport.dial_stream(stream, peer).await,
            #[cfg(feature = "tls")]
            Opened::Tls(stream, peer) => self.transport.dial_stream(*stream, peer).await,
        }
    }

    /// Connects (TLS for `https`) and upgrades the HTTP connection.
    async fn open(&self, target: &Target) -> io::Result<Opened> {
        #[cfg(not(feature = "tls"))]
        if target.https {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the gateway https://{} needs TLS, but this endpoint was built without TLS support; rebuild with the `tls` feature",
                    target.authority
                ),
            ));
        }
        let mut stream = TcpStream::connect(&target.authority).await?;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        #[cfg(feature = "tls")]
        if target.https {
            let mut stream = self.tls_handshake(target, stream).await?;
            self.upgrade(target, &mut stream).await?;
            return Ok(Opened::Tls(Box::new(stream), peer));
        }
        self.upgrade(target, &mut stream).await?;
        Ok(Opened::Plain(stream, peer))
    }

    /// tokio-rustls directly rather than hyper-rustls: this is one raw HTTP request on a
    /// stream that then carries the funcx protocol, not a pooled hyper client connection.
    #[cfg(feature = "tls")]
    async fn tls_handshake(
        &self,
        target: &Target,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let invalid = |e: TransportError| io::Error::new(io::ErrorKind::InvalidInput, e);
        let config = match &self.tls {
            Some(config) => config.clone(),
            None => crate::tls::client_config_with_public_roots().map_err(invalid)?,
        };
        let host = match target.authority.rfind(':') {
            Some(colon) if !target.authority[colon..].contains(']') => &target.authority[..colon],
            _ => target.authority.as_str(),
        };
        let name = crate::tls::server_name(host)?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the TLS handshake with the gateway {} failed: {e}",
                        target.authority
                    ),
                )
            })
    }

    /// Sends the upgrade request on `stream` and reads the answer's head; on `101`, the
    /// funcx handshake follows on the same stream.
    async fn upgrade<IO>(&self, target: &Target, stream: &mut IO) -> io::Result<()>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let request = format!(
            "GET {prefix}/v1/endpoints/{id}/connect HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_PROTOCOL}\r\n\r\n",
            prefix = target.prefix,
            id = self.endpoint_id,
            host = target.authority,
            token = self.token,
        );
        stream.write_all(request.as_bytes()).await?;
        // Through TLS, the request sits in the TLS buffer until flushed.
        stream.flush().await?;
        // Byte by byte up to the blank line: nothing after the head may be consumed here,
        // since the funcx handshake follows on the same stream.
        let mut head = Vec::with_capacity(256);
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD {
                return Err(refused("the gateway's answer has no end of headers".into()));
            }
            let byte = stream.read_u8().await?;
            head.push(byte);
        }
        let head = String::from_utf8_lossy(&head);
        let status_line = head.lines().next().unwrap_or_default();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| refused(format!("not an HTTP answer: {status_line:?}")))?;
        if status == 101 {
            return Ok(());
        }
        // The error body says why (JSON from the gateway); read what arrives promptly.
        let mut body = vec![0u8; MAX_ERROR_BODY];
        let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut body))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        let body = String::from_utf8_lossy(&body[..read]);
        Err(refused(format!(
            "the gateway refused the endpoint connection: {status_line}: {}",
            body.trim()
        )))
    }
}

/// An upgraded connection, before the funcx handshake.
enum Opened {
    Plain(TcpStream, SocketAddr),
    /// Boxed: a TLS stream is much larger than a TCP one.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>, SocketAddr),
}

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, message)
}

impl Dial for EndpointDial {
    fn dial(&self) -> BoxFuture<'_, Result<Connection<ToEndpoint, ToManager>, TransportError>> {
        Box::pin(self.connect())
    }
}
