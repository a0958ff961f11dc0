//! The endpoint's side of the connection: dial the gateway over HTTP and upgrade.

use std::io;
use std::time::Duration;

use funcx_transport::remote::{Dial, ToEndpoint, ToManager};
use funcx_transport::{Connection, TcpTransport, TransportError};
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api::UPGRADE_PROTOCOL;

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
/// use funcx_gateway::client::EndpointDial;
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
/// };
/// // EchoRunner stands in for real workers; use ExecutorRunner over a local Executor.
/// let exit = run_manager(dial, EchoRunner::new(4), ManagerConfig::new(info)).await;
/// println!("endpoint stopped: {exit}");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EndpointDial {
    gateway: String,
    endpoint_id: String,
    token: String,
    transport: TcpTransport,
}

impl EndpointDial {
    /// Dials the gateway at `gateway` (`host:port`) as endpoint `endpoint_id`, presenting
    /// `token`.
    pub fn new(
        gateway: impl Into<String>,
        endpoint_id: impl Into<String>,
        token: impl Into<String>,
    ) -> EndpointDial {
        EndpointDial {
            gateway: gateway.into(),
            endpoint_id: endpoint_id.into(),
            token: token.into(),
            transport: TcpTransport::new(),
        }
    }

    /// Uses `transport`'s frame limit and handshake timeout for the upgraded connection (its
    /// token and TLS settings are not used: the endpoint token travels in the HTTP request).
    pub fn transport(mut self, transport: TcpTransport) -> EndpointDial {
        self.transport = transport;
        self
    }

    async fn connect(&self) -> Result<Connection<ToEndpoint, ToManager>, TransportError> {
        let timeout = self.transport.handshake_timeout();
        let (stream, peer) = tokio::time::timeout(timeout, self.upgrade())
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the gateway did not answer within {timeout:?}"),
                )
            })??;
        self.transport.dial_stream(stream, peer).await
    }

    async fn upgrade(&self) -> io::Result<(TcpStream, std::net::SocketAddr)> {
        let mut stream = TcpStream::connect(&self.gateway).await?;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let request = format!(
            "GET /v1/endpoints/{id}/connect HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_PROTOCOL}\r\n\r\n",
            id = self.endpoint_id,
            host = self.gateway,
            token = self.token,
        );
        stream.write_all(request.as_bytes()).await?;
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
            return Ok((stream, peer));
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

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionRefused, message)
}

impl Dial for EndpointDial {
    fn dial(&self) -> BoxFuture<'_, Result<Connection<ToEndpoint, ToManager>, TransportError>> {
        Box::pin(self.connect())
    }
}
