//! funcx: serverless supercomputing as a Rust SDK.
//!
//! Register a Python function once, then call it millions of times on warm Python workers,
//! and get typed results back in Rust. The workers are plain `python3` processes that need
//! nothing but the standard library.
//!
//! ```no_run
//! use funcx::{Executor, Function, PythonRuntime};
//!
//! # #[tokio::main] async fn main() -> Result<(), funcx::TaskError> {
//! let executor = Executor::builder().workers(2).start(PythonRuntime::default());
//! let add = Function::from_source("def add(a, b):\n    return a + b\n", "add");
//!
//! let sum: i64 = executor.submit(&add, (2, 3)).result().await?;
//! assert_eq!(sum, 5);
//!
//! executor.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The crates behind this facade:
//! - [`funcx_core`] (re-exported at the root): functions, payloads, errors, the executor,
//!   its dispatcher and its tower layers;
//! - [`python`] (feature `python`, on by default): the Python worker runtime;
//! - [`transport`] and [`providers`] (features of the same names): the network transport and
//!   the providers of remote workers.
//!
//! [`blocking`] is the same API for programs that are not async.

pub use funcx_core::*;

pub mod blocking;

/// The Python worker runtime (`funcx-python`).
#[cfg(feature = "python")]
pub use funcx_python as python;
#[cfg(feature = "python")]
pub use funcx_python::{PythonConfig, PythonRuntime};

/// How messages move between endpoints, managers and clients (`funcx-transport`).
#[cfg(feature = "transport")]
pub use funcx_transport as transport;

/// Where workers come from (`funcx-providers`).
#[cfg(feature = "providers")]
pub use funcx_providers as providers;

/// What talks to a gateway: `RemoteExecutor`, `EndpointDial`, the API's bodies
/// (`funcx-client`, feature `client`; it compiles none of the gateway).
#[cfg(feature = "client")]
pub use funcx_client as client;

/// The self-hostable gateway (`funcx-gateway`, feature `gateway`).
#[cfg(feature = "gateway")]
pub use funcx_gateway as gateway;

/// Endpoints from one builder: a provider, managers, a scaling strategy, and where tasks
/// come from (this program, or a gateway it dials out to).
#[cfg(all(feature = "python", feature = "transport", feature = "providers"))]
pub mod endpoint;
#[cfg(all(feature = "python", feature = "transport", feature = "providers"))]
pub use endpoint::{Endpoint, EndpointBuilder};

/// The README's examples, compiled as doctests so that they cannot drift from the API. They
/// use the gateway too, so they are compiled with the `gateway` feature (`scripts/test`
/// turns it on).
#[cfg(all(doctest, feature = "gateway"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeExamples;
