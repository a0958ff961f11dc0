//! The in-memory transport: connections inside one process.
//!
//! Messages move as values through channels: nothing is encoded, copied or limited in size,
//! so tests and in-process endpoints pay nothing for the transport. The [`Connection`] type is
//! the same as over TCP, so code that works here works over the network (given messages that
//! serialize).
//!
//! Unlike a TCP connection, an in-memory connection has no backpressure in either direction:
//! messages wait in unbounded queues until they are received.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use funcx_transport::memory;
//!
//! let (mut listener, dialer) = memory::listener::<String, u32>();
//! tokio::spawn(async move {
//!     let mut manager = dialer.dial().await.unwrap();
//!     manager.send(42).unwrap();
//!     assert_eq!(manager.recv().await.unwrap().unwrap(), "thanks");
//! });
//! let mut conn = listener.accept().await.unwrap();
//! assert_eq!(conn.recv().await.unwrap().unwrap(), 42);
//! conn.send("thanks".to_owned()).unwrap();
//! # }
//! ```

use std::fmt;

use tokio::sync::mpsc;

use crate::connection::memory_pair;
use crate::{Connection, TransportError};

/// Two connected ends: the first sends `A` and receives `B`, the second the other way round.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (mut left, mut right) = funcx_transport::memory::pair::<u8, char>();
/// left.send(1).unwrap();
/// right.send('x').unwrap();
/// assert_eq!(right.recv().await.unwrap().unwrap(), 1);
/// assert_eq!(left.recv().await.unwrap().unwrap(), 'x');
/// drop(left);
/// assert!(right.recv().await.is_none());
/// # }
/// ```
pub fn pair<A, B>() -> (Connection<A, B>, Connection<B, A>) {
    memory_pair()
}

/// A listener and the dialer that reaches it: each [`MemoryDialer::dial`] makes a [`pair`] and
/// hands one end to [`MemoryListener::accept`].
///
/// The listener's connections send `S` and receive `R`; the dialer's the other way round.
pub fn listener<S, R>() -> (MemoryListener<S, R>, MemoryDialer<R, S>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (MemoryListener { rx }, MemoryDialer { tx })
}

/// Accepts in-memory connections made by its [`MemoryDialer`]s.
pub struct MemoryListener<S, R> {
    rx: mpsc::UnboundedReceiver<Connection<S, R>>,
}

impl<S, R> MemoryListener<S, R> {
    /// The next connection a dialer made.
    ///
    /// Fails with a closed error ([`TransportError::is_closed`]) once every dialer is dropped
    /// and no connection is waiting.
    pub async fn accept(&mut self) -> Result<Connection<S, R>, TransportError> {
        self.rx.recv().await.ok_or_else(TransportError::closed)
    }
}

impl<S, R> fmt::Debug for MemoryListener<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryListener").finish_non_exhaustive()
    }
}

/// Makes in-memory connections to its [`MemoryListener`]; cheap to clone.
pub struct MemoryDialer<S, R> {
    tx: mpsc::UnboundedSender<Connection<R, S>>,
}

impl<S, R> Clone for MemoryDialer<S, R> {
    fn clone(&self) -> Self {
        MemoryDialer {
            tx: self.tx.clone(),
        }
    }
}

impl<S, R> MemoryDialer<S, R> {
    /// Connects to the listener.
    ///
    /// Fails with a closed error ([`TransportError::is_closed`]) when the listener is gone.
    pub async fn dial(&self) -> Result<Connection<S, R>, TransportError> {
        let (ours, theirs) = pair::<S, R>();
        self.tx.send(theirs).map_err(|_| TransportError::closed())?;
        Ok(ours)
    }
}

impl<S, R> fmt::Debug for MemoryDialer<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryDialer")
            .field("listener_closed", &self.tx.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_move_without_serialization() {
        // Not Serialize: the in-memory transport does not need it.
        #[derive(Debug, PartialEq)]
        struct Plain(Vec<u8>);
        let (a, mut b) = pair::<Plain, ()>();
        a.send(Plain(vec![1, 2, 3])).unwrap();
        assert_eq!(b.recv().await.unwrap().unwrap(), Plain(vec![1, 2, 3]));
        assert!(b.peer().is_memory() && b.peer().addr().is_none());
    }

    #[tokio::test]
    async fn closing_is_seen_on_both_sides() {
        let (a, b) = pair::<u8, u8>();
        let (b_tx, b_rx) = b.split();
        drop(b_rx);
        assert!(a.send(1).unwrap_err().is_closed());
        drop(b_tx);
        let (_, mut a_rx) = a.split();
        assert!(a_rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn listener_and_dialer() {
        let (mut listener, dialer) = listener::<u8, u16>();
        let mut client = dialer.clone().dial().await.unwrap();
        let mut server = listener.accept().await.unwrap();
        client.send(7).unwrap();
        server.send(8).unwrap();
        assert_eq!(server.recv().await.unwrap().unwrap(), 7);
        assert_eq!(client.recv().await.unwrap().unwrap(), 8);
        drop(dialer);
        assert!(listener.accept().await.unwrap_err().is_closed());
        let (listener2, dialer2) = super::listener::<u8, u8>();
        drop(listener2);
        assert!(dialer2.dial().await.unwrap_err().is_closed());
    }
}
