//! The vocabulary and the engine of funcx.
//!
//! funcx runs Python functions on warm workers from Rust. This crate holds what every part of
//! it shares: [`Function`]s (registered once, identified by a content hash), [`Args`] and
//! [`Payload`]s (pickled bytes in, pickled bytes out), [`TaskError`] (every way a task can fail,
//! each with its cause), the [`Executor`] users submit to, and the dispatcher behind it, which
//! queues tasks, feeds workers with batches, and replaces workers that die.
//!
//! Workers come from a [`WorkerRuntime`]; `funcx-python` provides the one that runs Python.
//!
//! ```
//! use funcx_core::{Args, Function, Payload};
//!
//! let square = Function::from_source("def square(x):\n    return x * x\n", "square");
//! let args = Args::new().arg(&7);
//! assert_eq!(args.positional()[0].decode::<i64>().unwrap(), 7);
//! println!("registered {} as {}", square.name(), square.id());
//! ```
#![warn(missing_docs)]

mod args;
mod dispatcher;
mod error;
mod executor;
mod function;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
// Hashers for the workspace's own maps keyed by ids (the transport uses them too): not API.
#[doc(hidden)]
pub mod ids;
pub mod memoize;
mod payload;
mod provider;
mod resources;
mod retry;
mod shell;
mod status;
mod strategy;
mod task;
pub mod worker;

pub use args::{Args, IntoArgs};
pub use error::{ErrorCode, PythonException, TaskError, TaskErrorReport, WorkerExit};
pub use executor::{
    report_stream, Executor, ExecutorBuilder, ReportSink, ReportStream, ResponseFuture, Task,
    TaskHandle, TaskOptions, DEFAULT_MAX_ARGUMENTS_SIZE,
};
pub use function::{Function, FunctionBody, FunctionId};
pub use memoize::{Memoize, MemoizeLayer};
pub use payload::{Format, Payload};
pub use provider::{
    BlockId, BlockRequest, BlockState, BlockStatus, ManagerCommand, ManagerLayout, Provider,
    ProviderError, BLOCK_ID_ENV, NODE_INDEX_ENV,
};
pub use resources::{
    hostname, Capacity, Resources, ACCELERATOR_VARIABLES, HOSTS_VARIABLE, NODES_VARIABLE,
};
pub use retry::RetrySystemFailures;
pub use shell::{
    MpiFunction, ShellFunction, ShellResult, DEFAULT_MAX_LINE_BYTES, DEFAULT_SNIPPET_LINES,
    TASK_PLACEMENT_PY,
};
pub use status::{BlockReport, ExecutorStats, PoolStatus, StrategyStatus};
pub use strategy::{Strategy, StrategyConfig};
pub use task::{TaskId, TaskReport, TaskState, TaskStatus, Timeline};
pub use worker::{SpawnError, WorkerRuntime};
