//! [`TransportError`]: every way moving a message can fail.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a connection could not be made, or why it stopped.
///
/// The error is opaque: ask it what happened with the `is_*` methods, and print it for a
/// message a person can act on. Each message names the fix where there is one, for example
/// `peer speaks funcx protocol 2, we speak 1; upgrade the older side`.
///
/// ```
/// # async fn demo() {
/// use funcx_transport::TcpTransport;
///
/// let transport = TcpTransport::builder().token("s3cret").build();
/// match transport.dial::<u32, u32>("127.0.0.1:1").await {
///     Ok(_) => {}
///     Err(e) if e.is_io() => eprintln!("nobody listens there: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
pub struct TransportError {
    kind: Kind,
    peer: Option<SocketAddr>,
    source: Option<BoxError>,
}

#[derive(Debug)]
enum Kind {
    Io,
    Handshake {
        reason: String,
        timed_out: bool,
    },
    VersionMismatch {
        ours: u16,
        theirs: u16,
    },
    BadToken {
        we_refused: bool,
    },
    FrameTooLarge {
        size: u64,
        limit: usize,
    },
    Decode {
        reason: String,
    },
    Closed,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Tls {
        reason: String,
    },
}

impl TransportError {
    fn new(kind: Kind) -> Self {
        TransportError {
            kind,
            peer: None,
            source: None,
        }
    }

    pub(crate) fn io(err: std::io::Error) -> Self {
        TransportError {
            source: Some(Box::new(err)),
            ..Self::new(Kind::Io)
        }
    }

    pub(crate) fn handshake(reason: impl Into<String>) -> Self {
        Self::new(Kind::Handshake {
            reason: reason.into(),
            timed_out: false,
        })
    }

    pub(crate) fn handshake_timeout(after: Duration) -> Self {
        Self::new(Kind::Handshake {
            reason: format!("no handshake from the peer within {after:?}"),
            timed_out: true,
        })
    }

    pub(crate) fn version_mismatch(ours: u16, theirs: u16) -> Self {
        Self::new(Kind::VersionMismatch { ours, theirs })
    }

    /// `we_refused`: true on the side that checked the token (the server).
    pub(crate) fn bad_token(we_refused: bool) -> Self {
        Self::new(Kind::BadToken { we_refused })
    }

    pub(crate) fn frame_too_large(size: u64, limit: usize) -> Self {
        Self::new(Kind::FrameTooLarge { size, limit })
    }

    pub(crate) fn decode(reason: impl Into<String>) -> Self {
        Self::new(Kind::Decode {
            reason: reason.into(),
        })
    }

    pub(crate) fn closed() -> Self {
        Self::new(Kind::Closed)
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls(reason: impl Into<String>, source: Option<BoxError>) -> Self {
        TransportError {
            source,
            ..Self::new(Kind::Tls {
                reason: reason.into(),
            })
        }
    }

    /// Attaches the address of the peer this error is about (kept if one is already set).
    pub(crate) fn with_peer(mut self, peer: Option<SocketAddr>) -> Self {
        if self.peer.is_none() {
            self.peer = peer;
        }
        self
    }

    /// The operating system failed to connect, read or write (refused, reset, unreachable...).
    pub fn is_io(&self) -> bool {
        matches!(self.kind, Kind::Io)
    }

    /// The peer did not complete the funcx handshake: it sent something that is not the funcx
    /// preamble, closed the connection during it, or stayed silent past the timeout.
    ///
    /// Version and token refusals have their own checks: [`is_version_mismatch`] and
    /// [`is_bad_token`].
    ///
    /// [`is_version_mismatch`]: TransportError::is_version_mismatch
    /// [`is_bad_token`]: TransportError::is_bad_token
    pub fn is_handshake(&self) -> bool {
        matches!(self.kind, Kind::Handshake { .. })
    }

    /// The handshake did not finish within the configured timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            Kind::Handshake {
                timed_out: true,
                ..
            }
        )
    }

    /// The two sides speak different versions of the funcx protocol.
    pub fn is_version_mismatch(&self) -> bool {
        matches!(self.kind, Kind::VersionMismatch { .. })
    }

    /// The token presented at the handshake did not match (on either side: the server that
    /// refused it and the client that was refused both see this).
    pub fn is_bad_token(&self) -> bool {
        matches!(self.kind, Kind::BadToken { .. })
    }

    /// A frame (incoming or outgoing) was larger than the configured maximum frame size.
    pub fn is_frame_too_large(&self) -> bool {
        matches!(self.kind, Kind::FrameTooLarge { .. })
    }

    /// A frame could not be turned into (or made from) a message: the peer sent bytes that
    /// are not a message of the expected type, or the stream ended in the middle of a frame.
    pub fn is_decode(&self) -> bool {
        matches!(self.kind, Kind::Decode { .. })
    }

    /// The connection is closed: nothing more can be sent on it.
    pub fn is_closed(&self) -> bool {
        matches!(self.kind, Kind::Closed)
    }

    /// TLS could not be set up: bad certificate or key files, or the TLS handshake failed.
    pub fn is_tls(&self) -> bool {
        matches!(self.kind, Kind::Tls { .. })
    }

    /// Our protocol version and the peer's, if this is a version mismatch.
    pub fn versions(&self) -> Option<(u16, u16)> {
        match self.kind {
            Kind::VersionMismatch { ours, theirs } => Some((ours, theirs)),
            _ => None,
        }
    }

    /// The size of the offending frame and the limit, if this is a frame that was too large.
    pub fn frame_size(&self) -> Option<(u64, usize)> {
        match self.kind {
            Kind::FrameTooLarge { size, limit } => Some((size, limit)),
            _ => None,
        }
    }

    /// The address of the peer this error is about, where it is known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(peer) = self.peer {
            write!(f, "{peer}: ")?;
        }
        match &self.kind {
            Kind::Io => match &self.source {
                Some(source) => write!(f, "connection I/O failed: {source}"),
                None => f.write_str("connection I/O failed"),
            },
            Kind::Handshake { reason, .. } => write!(f, "funcx handshake failed: {reason}"),
            Kind::VersionMismatch { ours, theirs } => write!(
                f,
                "peer speaks funcx protocol {theirs}, we speak {ours}; upgrade the older side"
            ),
            Kind::BadToken { we_refused: true } => {
                f.write_str("the peer presented a wrong token; give both sides the same token")
            }
            Kind::BadToken { we_refused: false } => {
                f.write_str("the peer refused our token; give both sides the same token")
            }
            Kind::FrameTooLarge { size, limit } => write!(
                f,
                "frame of {size} bytes exceeds the limit of {limit}; \
                 raise max_frame_size on both sides if messages this large are expected"
            ),
            Kind::Decode { reason } => write!(f, "could not decode a frame: {reason}"),
            Kind::Closed => f.write_str("the connection is closed"),
            Kind::Tls { reason } => match &self.source {
                Some(source) => write!(f, "TLS failed: {reason}: {source}"),
                None => write!(f, "TLS failed: {reason}"),
            },
        }
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TransportError");
        d.field("kind", &self.kind);
        if let Some(peer) = &self.peer {
            d.field("peer", peer);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for TransportError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_ref()
            .map(|s| &**s as &(dyn StdError + 'static))
    }
}

impl From<std::io::Error> for TransportError {
    fn from(err: std::io::Error) -> Self {
        TransportError::io(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        assert_eq!(
            TransportError::version_mismatch(1, 2).to_string(),
            "peer speaks funcx protocol 2, we speak 1; upgrade the older side"
        );
        assert!(TransportError::bad_token(false)
            .to_string()
            .starts_with("the peer refused our token"));
        assert!(TransportError::frame_too_large(3_000_000, 1_048_576)
            .to_string()
            .starts_with("frame of 3000000 bytes exceeds the limit of 1048576"));
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = TransportError::closed().with_peer(Some(addr));
        assert_eq!(e.to_string(), "127.0.0.1:9: the connection is closed");
        assert_eq!(e.peer_addr(), Some(addr));
    }

    #[test]
    fn kinds_are_exclusive() {
        let e = TransportError::handshake_timeout(Duration::from_secs(1));
        assert!(e.is_handshake() && e.is_timeout() && !e.is_io());
        let e = TransportError::io(std::io::Error::other("boom"));
        assert!(e.is_io() && !e.is_handshake() && e.source().is_some());
        assert_eq!(
            TransportError::frame_too_large(5, 4).frame_size(),
            Some((5, 4))
        );
        assert_eq!(
            TransportError::version_mismatch(1, 99).versions(),
            Some((1, 99))
        );
    }
}
