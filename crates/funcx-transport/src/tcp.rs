//! [`TcpTransport`]: connections over TCP (optionally TLS), with the funcx handshake.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::connection::{spawn_stream, Peer};
use crate::frame::{
    Limits, DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_MESSAGE_SIZE, MAX_FRAME_SIZE_LIMIT,
};
use crate::pool::BufferPool;
use crate::{handshake, Connection, TransportError, PROTOCOL_VERSION};

#[cfg(feature = "tls")]
use crate::tls::{TlsClientConfig, TlsServerConfig};

/// The default time a peer has to complete the handshake: 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many accepted connections may be in their handshake at once; more wait in the kernel's
/// backlog.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// The most a transport keeps of the buffers its connections read large frames into: seven
/// frames of a 16 MiB payload. A manager of 8 workers holds one large argument per busy
/// worker, and they come back as their tasks finish; with room for only three, W6-tcp's
/// manager still spent twice as long in page faults of fresh buffers.
const RECEIVE_POOL_KEEP: usize = 128 * 1024 * 1024;
/// How many finished connections wait for [`TcpAcceptor::accept`].
const ACCEPT_QUEUE: usize = 64;
/// The pause after the listening socket itself fails (out of file descriptors...).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How to make and accept funcx connections over TCP: the token, the limits, and TLS.
///
/// Cheap to clone. Both sides of a connection must agree on the token (and on TLS); each side
/// enforces its own maximum frame size on what it receives and what it sends.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), funcx_transport::TransportError> {
/// use std::time::Duration;
/// use funcx_transport::TcpTransport;
///
/// let transport = TcpTransport::builder()
///     .token("s3cret")
///     .max_frame_size(8 * 1024 * 1024)
///     .handshake_timeout(Duration::from_secs(5))
///     .build();
/// let mut acceptor = transport.listen::<u64, u64>("127.0.0.1:0").await?;
/// let mut manager = transport.dial::<u64, u64>(acceptor.local_addr()).await?;
/// let mut endpoint = acceptor.accept().await?;
/// manager.send(1)?;
/// assert_eq!(endpoint.recv().await.unwrap()?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TcpTransport {
    token: Arc<[u8]>,
    max_frame_size: usize,
    max_message_size: usize,
    handshake_timeout: Duration,
    nodelay: bool,
    /// The buffers large frames are read into, shared by every connection made with this
    /// transport (and its clones), so that what it keeps is bounded per transport.
    receive_pool: BufferPool,
    #[cfg(feature = "tls")]
    tls_client: Option<TlsClientConfig>,
    #[cfg(feature = "tls")]
    tls_server: Option<TlsServerConfig>,
}

impl Default for TcpTransport {
    fn default() -> Self {
        TcpTransport {
            token: Arc::from(&[][..]),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            nodelay: true,
            receive_pool: BufferPool::new(RECEIVE_POOL_KEEP),
            #[cfg(feature = "tls")]
            tls_client: None,
            #[cfg(feature = "tls")]
            tls_server: None,
        }
    }
}

impl fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TcpTransport");
        d.field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("max_frame_size", &self.max_frame_size)
            .field("max_message_size", &self.max_message_size)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("nodelay", &self.nodelay);
        #[cfg(feature = "tls")]
        d.field("tls_client", &self.tls_client.is_some())
            .field("tls_server", &self.tls_server.is_some());
        d.finish()
    }
}

impl TcpTransport {
    /// A transport with the defaults: empty token, 64 MiB frames, a 10 s handshake timeout,
    /// `TCP_NODELAY` on, no TLS.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from the defaults; see [`TcpTransportBuilder`].
    pub fn builder() -> TcpTransportBuilder {
        TcpTransportBuilder {
            transport: Self::default(),
        }
    }

    /// The largest frame body this side sends or accepts, in bytes.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// The largest message this side sends or accepts, in bytes; one over the frame size
    /// travels as several frames.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    fn limits(&self) -> Limits {
        Limits {
            max_frame_size: self.max_frame_size,
            max_message_size: self.max_message_size.max(self.max_frame_size),
        }
    }

    /// Starts a connection over a stream whose handshake is done, with this transport's
    /// limits and receive buffers.
    fn connection<S, R, Rd, Wr>(&self, rd: Rd, wr: Wr, peer: Peer) -> Connection<S, R>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        Rd: AsyncRead + Unpin + Send + 'static,
        Wr: AsyncWrite + Unpin + Send + 'static,
    {
        spawn_stream(rd, wr, peer, self.limits(), self.receive_pool.clone())
    }

    /// How long a peer has to complete the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Connects to a listening endpoint and runs the handshake.
    ///
    /// Tries each address `addr` resolves to in turn. Fails with
    /// [`is_io`](TransportError::is_io) when nothing accepts the connection,
    /// [`is_bad_token`](TransportError::is_bad_token) or
    /// [`is_version_mismatch`](TransportError::is_version_mismatch) when the endpoint refuses
    /// us, [`is_timeout`](TransportError::is_timeout) when it does not answer the handshake in
    /// time, and [`is_tls`](TransportError::is_tls) when TLS fails.
    pub async fn dial<S, R>(
        &self,
        addr: impl ToSocketAddrs,
    ) -> Result<Connection<S, R>, TransportError>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let mut last_error = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match TcpStream::connect(addr).await {
                Ok(stream) => return self.client_side(stream, addr).await,
                Err(e) => last_error = Some(TransportError::io(e).with_peer(Some(addr))),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            TransportError::io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            ))
        }))
    }

    /// Binds a listening socket and starts accepting connections in the background.
    ///
    /// Each accepted connection runs its handshake in its own task, so a slow or silent peer
    /// holds up nobody else; [`TcpAcceptor::accept`] hands out the results in the order the
    /// handshakes finish.
    pub async fn listen<S, R>(
        &self,
        addr: impl ToSocketAddrs,
    ) -> Result<TcpAcceptor<S, R>, TransportError>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let task = tokio::spawn(accept_loop(listener, self.clone(), tx));
        Ok(TcpAcceptor {
            rx,
            local_addr,
            task: task.abort_handle(),
        })
    }

    /// Runs the handshake as the side that dialled over `stream`, a byte stream connected by
    /// other means, and starts a connection on it: the same handshake (token, version),
    /// framing and limits as [`TcpTransport::dial`], without the TCP connect.
    ///
    /// This is how a manager reaches an endpoint through an HTTP server: it connects, asks
    /// for an HTTP upgrade, and hands the upgraded stream here. TLS settings are not applied
    /// (wrap `stream` in TLS before calling, if it needs it); `peer` is the address the
    /// stream leads to, for logs and errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), funcx_transport::TransportError> {
    /// use funcx_transport::TcpTransport;
    ///
    /// let transport = TcpTransport::builder().token("s3cret").build();
    /// let (a, b) = tokio::io::duplex(64 * 1024);
    /// let peer = "127.0.0.1:1".parse().unwrap();
    /// let (dialled, accepted) = tokio::join!(
    ///     transport.dial_stream::<u64, u64, _>(a, peer),
    ///     transport.accept_stream::<u64, u64, _>(b, peer),
    /// );
    /// let (dialled, mut accepted) = (dialled?, accepted?);
    /// dialled.send(7)?;
    /// assert_eq!(accepted.recv().await.unwrap()?, 7);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn dial_stream<S, R, IO>(
        &self,
        stream: IO,
        peer: SocketAddr,
    ) -> Result<Connection<S, R>, TransportError>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = async {
            let mut stream = stream;
            handshake::client(&mut stream, PROTOCOL_VERSION, &self.token).await?;
            let (rd, wr) = tokio::io::split(stream);
            Ok(self.connection(rd, wr, Peer::tcp(peer)))
        };
        self.with_timeout(handshake)
            .await
            .map_err(|e| e.with_peer(Some(peer)))
    }

    /// Runs the handshake as the accepting side over `stream`, a byte stream connected by
    /// other means (an HTTP connection upgraded to the funcx protocol), and starts a
    /// connection on it; the counterpart of [`TcpTransport::dial_stream`].
    pub async fn accept_stream<S, R, IO>(
        &self,
        stream: IO,
        peer: SocketAddr,
    ) -> Result<Connection<S, R>, TransportError>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let handshake = async {
            let mut stream = stream;
            handshake::server(&mut stream, PROTOCOL_VERSION, &self.token).await?;
            let (rd, wr) = tokio::io::split(stream);
            Ok(self.connection(rd, wr, Peer::tcp(peer)))
        };
        self.with_timeout(handshake)
            .await
            .map_err(|e| e.with_peer(Some(peer)))
    }

    async fn client_side<S, R>(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> Result<Connection<S, R>, TransportError>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let handshake = async {
            stream.set_nodelay(self.nodelay)?;
            #[cfg(feature = "tls")]
            if let Some(tls) = &self.tls_client {
                let mut stream = tls.connect(stream).await?;
                handshake::client(&mut stream, PROTOCOL_VERSION, &self.token).await?;
                let (rd, wr) = tokio::io::split(stream);
                return Ok(self.connection(rd, wr, Peer::tls(addr)));
            }
            let mut stream = stream;
            handshake::client(&mut stream, PROTOCOL_VERSION, &self.token).await?;
            let (rd, wr) = stream.into_split();
            Ok(self.connection(rd, wr, Peer::tcp(addr)))
        };
        self.with_timeout(handshake)
            .await
            .map_err(|e| e.with_peer(Some(addr)))
    }

    async fn server_side<S, R>(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
    ) -> Result<Connection<S, R>, TransportError>
    where
        S: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        let handshake = async {
            stream.set_nodelay(self.nodelay)?;
            #[cfg(feature = "tls")]
            if let Some(tls) = &self.tls_server {
                let mut stream = tls.accept(stream).await?;
                handshake::server(&mut stream, PROTOCOL_VERSION, &self.token).await?;
                let (rd, wr) = tokio::io::split(stream);
                return Ok(self.connection(rd, wr, Peer::tls(addr)));
            }
            let mut stream = stream;
            handshake::server(&mut stream, PROTOCOL_VERSION, &self.token).await?;
            let (rd, wr) = stream.into_split();
            Ok(self.connection(rd, wr, Peer::tcp(addr)))
        };
        self.with_timeout(handshake)
            .await
            .map_err(|e| e.with_peer(Some(addr)))
    }

    async fn with_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, TransportError>>,
    ) -> Result<T, TransportError> {
        match tokio::time::timeout(self.handshake_timeout, fut).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::handshake_timeout(self.handshake_timeout)),
        }
    }
}

/// Builds a [`TcpTransport`].
///
/// ```
/// use std::time::Duration;
/// use funcx_transport::TcpTransport;
///
/// let transport = TcpTransport::builder()
///     .token(b"from the environment".to_vec())
///     .max_frame_size(32 * 1024 * 1024)
///     .handshake_timeout(Duration::from_secs(3))
///     .nodelay(true)
///     .build();
/// assert_eq!(transport.max_frame_size(), 32 * 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
pub struct TcpTransportBuilder {
    transport: TcpTransport,
}

impl TcpTransportBuilder {
    /// The shared secret both sides present at the handshake (default: empty). A listener
    /// refuses a dialler whose token differs, and both learn why.
    ///
    /// Without TLS the token crosses the network in the clear: it keeps stray or misdirected
    /// managers out, not an attacker who can watch the traffic.
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Self {
        self.transport.token = Arc::from(token.as_ref());
        self
    }

    /// The largest frame body, in bytes, that this side sends or accepts (default 64 MiB, at
    /// most 2 GiB − 1). A larger message is sent as several frames (see [`crate::frame`]).
    ///
    /// A larger incoming frame is refused from its header, before anything is allocated for
    /// it, and closes the connection.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.transport.max_frame_size = bytes.clamp(1, MAX_FRAME_SIZE_LIMIT);
        self
    }

    /// The largest message, in bytes, that this side sends or accepts (default 1 GiB +
    /// 64 MiB: one task's arguments or result at the default 1 GiB limit, and room around
    /// it). Never less than the frame size.
    ///
    /// The manager protocol splits its batches so that no message it sends can pass this;
    /// an incoming message that would is refused as its fragments arrive, and closes the
    /// connection.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.transport.max_message_size = bytes;
        self
    }

    /// How long the peer has to complete the handshake (TLS included; default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.transport.handshake_timeout = timeout;
        self
    }

    /// Whether to set `TCP_NODELAY` (default on). The writer already gathers queued messages
    /// into one write, so Nagle's algorithm only adds latency.
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.transport.nodelay = nodelay;
        self
    }

    /// Dial with TLS, verifying the listener with `config`.
    #[cfg(feature = "tls")]
    pub fn tls_client(mut self, config: TlsClientConfig) -> Self {
        self.transport.tls_client = Some(config);
        self
    }

    /// Accept only TLS connections, presenting the certificate in `config`.
    #[cfg(feature = "tls")]
    pub fn tls_server(mut self, config: TlsServerConfig) -> Self {
        self.transport.tls_server = Some(config);
        self
    }

    /// The transport.
    pub fn build(self) -> TcpTransport {
        self.transport
    }
}

/// Accepts funcx connections on a listening TCP socket; made by [`TcpTransport::listen`].
///
/// Dropping it stops listening; connections already accepted stay open.
pub struct TcpAcceptor<S, R> {
    rx: mpsc::Receiver<Result<Connection<S, R>, TransportError>>,
    local_addr: SocketAddr,
    task: AbortHandle,
}

impl<S, R> TcpAcceptor<S, R> {
    /// The address the socket is bound to (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next connection whose handshake succeeded, or the error of one that failed.
    ///
    /// An error concerns one incoming connection only (a wrong token, another protocol
    /// version, a silent peer, something that is not funcx at all, a socket error): log it
    /// and call `accept` again. It carries the peer's address where known
    /// ([`TransportError::peer_addr`]). Other connections, pending or established, are not
    /// affected.
    ///
    /// ```no_run
    /// # async fn serve(transport: funcx_transport::TcpTransport) -> Result<(), funcx_transport::TransportError> {
    /// let mut acceptor = transport.listen::<String, String>("127.0.0.1:0").await?;
    /// loop {
    ///     match acceptor.accept().await {
    ///         Ok(conn) => { tokio::spawn(async move { /* serve conn */ drop(conn) }); }
    ///         Err(e) => eprintln!("refused a connection: {e}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn accept(&mut self) -> Result<Connection<S, R>, TransportError> {
        match self.rx.recv().await {
            Some(result) => result,
            None => Err(TransportError::closed()),
        }
    }
}

impl<S, R> Drop for TcpAcceptor<S, R> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S, R> fmt::Debug for TcpAcceptor<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpAcceptor")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

async fn accept_loop<S, R>(
    listener: TcpListener,
    transport: TcpTransport,
    tx: mpsc::Sender<Result<Connection<S, R>, TransportError>>,
) where
    S: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    let mut handshakes = JoinSet::new();
    loop {
        let result = tokio::select! {
            _ = tx.closed() => return,
            Some(done) = handshakes.join_next(), if !handshakes.is_empty() => match done {
                Ok(result) => result,
                // A handshake task cannot panic; if one was cancelled, nothing to report.
                Err(_) => continue,
            },
            accepted = listener.accept(), if handshakes.len() < MAX_PENDING_HANDSHAKES => {
                match accepted {
                    Ok((stream, addr)) => {
                        let transport = transport.clone();
                        handshakes.spawn(async move { transport.server_side(stream, addr).await });
                        continue;
                    }
                    Err(e) => {
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        Err(TransportError::io(e))
                    }
                }
            }
        };
        if let Err(e) = &result {
            tracing::debug!(error = %e, "an incoming connection failed");
        }
        if tx.send(result).await.is_err() {
            return;
        }
    }
}
