//! The Python runtime of funcx: warm Python worker processes spoken to over pipes.
//!
//! ```no_run
//! use funcx_python::{PythonConfig, PythonRuntime};
//!
//! // Workers from a virtual environment, worker i pinned to GPU i mod 4.
//! let runtime = PythonRuntime::new(
//!     PythonConfig::new()
//!         .python("/opt/venv/bin/python")
//!         .accelerators(vec!["0".into(), "1".into(), "2".into(), "3".into()]),
//! );
//! // `runtime` is a `funcx_core::WorkerRuntime`: hand it to an executor.
//! # let _ = runtime;
//! ```
//!
//! A [`PythonRuntime`] starts each worker as `python -u -c <worker program>`; the program is
//! standard-library Python (3.8 or later) embedded in this crate. The worker reads frames
//! of the [`protocol`] from its stdin and writes frames to its stdout; before running any
//! user code it moves the protocol to private file descriptors and points fd 1 at stderr,
//! so whatever a function prints (from Python or from C) lands in the log, never in the
//! protocol. Worker stderr is logged line by line through `tracing` under the target
//! `funcx::worker`.
//!
//! Tasks run one at a time in the order received. Results are batched into one write when
//! the worker runs out of queued input, so a burst of small tasks costs a few microseconds
//! each; a task marked `isolate` is reported as started and finished on its own.
#![warn(missing_docs)]

mod block_nodes;
mod config;
mod container;
pub mod manager;
mod memory;
pub mod protocol;
mod runtime;
mod shared;

pub use block_nodes::BlockNodes;
pub use config::{PythonConfig, ACCELERATOR_VARIABLES, DEFAULT_MAX_RESULT_SIZE};
pub use container::Container;
pub use memory::machine_memory;
pub use runtime::{PythonRuntime, PythonWorker};
