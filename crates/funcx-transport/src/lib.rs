//! How funcx messages move.
//!
//! This crate will hold the implementations of `funcx-core`'s transport seam: in-memory
//! connection pairs, TCP with length-delimited postcard frames (with a version and token
//! handshake and optional TLS), and the HTTP API of the gateway (server router and client).
//!
//! Today the local endpoint talks to its Python workers over pipes (see `funcx-python`), so
//! nothing here is needed yet; the crate exists so that the workspace layout is the one
//! users will depend on.

/// The version of the funcx wire protocol that this crate speaks.
///
/// Peers with a different version refuse each other at the handshake instead of
/// misreading frames later.
pub const PROTOCOL_VERSION: u16 = 1;
