//! What talks to a funcx gateway, without the gateway.
//!
//! - [`connect`] and [`RemoteConfig`]: an ordinary [`funcx_core::Executor`] whose tasks run on
//!   an endpoint behind a gateway (submissions over HTTP, results pushed over one binary stream);
//! - [`EndpointDial`]: how an endpoint process dials *out* to its gateway and becomes a
//!   manager of its queue there;
//! - [`model`]: the bodies of the gateway's HTTP API and the names its requests use, the
//!   contract between this crate and the gateway's routes;
//! - [`tls`] (feature `tls`): whom an `https://` gateway must be certified by.
//!
//! ```no_run
//! use funcx_core::Function;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let executor = funcx_client::connect("http://127.0.0.1:8470", "alice's token", "3f9c0e...").await?;
//! let add = Function::from_source("def add(a, b):\n    return a + b\n", "add");
//! let sum: i64 = executor.submit(&add, (2, 3)).result().await?;
//! # Ok(()) }
//! ```
//!
//! # Why a crate of its own
//!
//! The gateway (`funcx-gateway`) is a server: axum, an embedded redb store, its configuration
//! files, the Globus Compute routes. A program that only submits tasks to a gateway, or an
//! endpoint that only dials one, needs none of that, and compiling it cost minutes and a newer
//! Rust (redb needs 1.85). A `server` feature of the gateway crate would have done the same
//! for a build of one program, but Cargo unifies features across a workspace and a dependency
//! graph: one crate anywhere that turns the server on (the facade's `gateway` feature, a test
//! harness) would compile it into every client again, and every client module would need
//! `cfg` attributes to stay apart from the server's. A crate keeps the boundary in the
//! dependency graph, where `cargo tree -p funcx-client` shows it (no axum, no redb), and the
//! gateway depends on this crate for the wire types it serves, so the two cannot drift.
#![warn(missing_docs)]

mod dial;
pub mod model;
mod remote_executor;
#[cfg(feature = "tls")]
pub mod tls;

pub use dial::EndpointDial;
pub use remote_executor::{connect, RemoteConfig, RemoteError};
