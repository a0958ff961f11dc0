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
//! - `funcx-core`, whose public API is listed at the root: functions, payloads, errors, the
//!   executor and its tower layers, shell and MPI tasks, the seams for worker runtimes
//!   ([`worker`]) and providers ([`Provider`]);
//! - [`python`] (feature `python`, on by default): the Python worker runtime;
//! - [`transport`] and [`providers`] (features of the same names): the network transport and
//!   the providers of remote workers.
//!
//! [`blocking`] is the same API for programs that are not async.

// The core API, listed by hand (as tokio's lib.rs does): each item has this one path, and
// what the root offers is a decision, not whatever funcx-core happens to make public.

// Functions, their arguments and results.
pub use funcx_core::{Args, Format, Function, FunctionBody, FunctionId, IntoArgs, Payload};
// Running tasks.
pub use funcx_core::{
    Executor, ExecutorBuilder, ResponseFuture, Task, TaskHandle, TaskOptions,
    DEFAULT_MAX_ARGUMENTS_SIZE,
};
// What tasks report: states, timelines, and the reports an executor streams.
pub use funcx_core::{
    report_stream, ReportSink, ReportStream, TaskId, TaskReport, TaskState, TaskStatus, Timeline,
};
// Errors.
pub use funcx_core::{ErrorCode, PythonException, TaskError, TaskErrorReport, WorkerExit};
// Tower layers.
pub use funcx_core::{memoize, Memoize, MemoizeLayer, RetrySystemFailures};
// Per-task resources, and shell and MPI tasks.
pub use funcx_core::{
    Capacity, MpiFunction, Resources, ShellFunction, ShellResult, ACCELERATOR_VARIABLES,
    DEFAULT_MAX_LINE_BYTES, DEFAULT_SNIPPET_LINES,
};
// Worker runtimes: the seam a runtime implements, and the messages it exchanges.
pub use funcx_core::{worker, SpawnError, WorkerRuntime};
// Providers of blocks of workers, and how an endpoint scales and reports them.
pub use funcx_core::{
    BlockId, BlockReport, BlockRequest, BlockState, BlockStatus, ExecutorStats, ManagerCommand,
    ManagerLayout, PoolStatus, Provider, ProviderError, Strategy, StrategyConfig, StrategyStatus,
    BLOCK_ID_ENV, NODE_INDEX_ENV,
};

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

/// What talks to a gateway: `connect` and `RemoteConfig` (a remote executor), `EndpointDial`, the API's bodies
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
