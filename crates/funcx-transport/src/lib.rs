//! How funcx messages move.
//!
//! A [`Connection<S, R>`] sends messages of type `S` and receives messages of type `R`,
//! whatever carries them:
//!
//! - [`TcpTransport`]: TCP with length-delimited [postcard] frames (see [`frame`]), a version
//!   and token handshake, and optionally TLS (feature `tls`, see `tls`). Managers dial in to
//!   an endpoint with [`TcpTransport::dial`]; the endpoint accepts them with
//!   [`TcpTransport::listen`] and [`TcpAcceptor::accept`].
//! - [`memory`]: connections inside one process, moving values without encoding them.
//!
//! Sending never blocks: messages queue, and a writer task gathers everything queued into one
//! write. Receiving yields each message in order, then `None` once the peer closed; a peer
//! that sends something malformed gets its connection closed, and the receiver one error that
//! says why. Nothing a peer sends can panic this side.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use funcx_transport::{TcpTransport, TransportError};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum ToManager { Run { task: u64, input: Vec<u8> }, Shutdown }
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum ToEndpoint { Done { task: u64, output: Vec<u8> } }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), TransportError> {
//! let transport = TcpTransport::builder().token("s3cret").build();
//!
//! // The endpoint listens; port 0 lets the system choose.
//! let mut acceptor = transport.listen::<ToManager, ToEndpoint>("127.0.0.1:0").await?;
//! let addr = acceptor.local_addr();
//!
//! // A manager dials in and serves one task.
//! let manager = tokio::spawn({
//!     let transport = transport.clone();
//!     async move {
//!         let mut conn = transport.dial::<ToEndpoint, ToManager>(addr).await?;
//!         while let Some(msg) = conn.recv().await {
//!             match msg? {
//!                 ToManager::Run { task, input } => {
//!                     conn.send(ToEndpoint::Done { task, output: input.repeat(2) })?
//!                 }
//!                 ToManager::Shutdown => break,
//!             }
//!         }
//!         Ok::<_, TransportError>(())
//!     }
//! });
//!
//! let mut conn = acceptor.accept().await?;
//! conn.send(ToManager::Run { task: 7, input: b"ab".to_vec() })?;
//! let reply = conn.recv().await.expect("the manager answers")?;
//! assert_eq!(reply, ToEndpoint::Done { task: 7, output: b"abab".to_vec() });
//! conn.send(ToManager::Shutdown)?;
//! manager.await.expect("the manager task ran")?;
//! # Ok(())
//! # }
//! ```
//!
//! [postcard]: https://docs.rs/postcard
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod connection;
mod error;
pub mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handshake;
pub mod memory;
mod outgoing;
pub mod pool;
pub mod remote;
mod tcp;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;

pub use connection::{Connection, Peer, Receiver, Sender};
pub use error::TransportError;
pub use handshake::new_token;
pub use memory::{MemoryDialer, MemoryListener};
pub use tcp::{TcpAcceptor, TcpTransport, TcpTransportBuilder, DEFAULT_HANDSHAKE_TIMEOUT};

/// The version of the funcx wire protocol that this crate speaks.
///
/// Peers with a different version refuse each other at the handshake instead of
/// misreading frames later. Version 2 added fragmented messages (see [`frame`]); version 3
/// added what a manager's machine offers tasks to its registration (`ManagerInfo::cores`
/// and `memory`).
pub const PROTOCOL_VERSION: u16 = 3;
