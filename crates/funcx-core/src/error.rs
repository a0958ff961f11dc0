//! The ways a task can fail.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a task did not produce a result.
///
/// `TaskError` is opaque, as `hyper::Error` is: ask what happened with the `is_*` methods and
/// read the details with [`TaskError::python_exception`] and [`TaskError::worker_exit`]. The
/// `Display` text always names the cause; there is no "lost" without a reason.
///
/// Failures fall in two families, and [`TaskError::is_system`] tells them apart: the
/// *function's* (it raised, it could not be loaded, its result could not be pickled) and the
/// *system's* (the worker died, no worker could be started). Only the second is worth
/// retrying; [`crate::RetrySystemFailures`] does exactly that.
pub struct TaskError {
    inner: Box<Inner>,
}

struct Inner {
    kind: Kind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Python(PythonException),
    Load(PythonException),
    ArgumentsUnpickle(PythonException),
    ResultPickle(PythonException),
    Serialize(String),
    Decode(String),
    ResultTooLarge { size: u64, limit: u64 },
    WorkerDied(WorkerExit),
    Timeout(Duration),
    Cancelled,
    Shutdown,
    NoWorkers(String),
    ManagerLost(String),
    Protocol(String),
    // New kinds go last: postcard (the manager protocol, stored tasks) numbers variants by
    // position.
    ArgumentsTooLarge { size: u64, limit: u64 },
}

/// A Python exception as it arrived from a worker: type, message and formatted traceback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonException {
    /// The exception's qualified type name, e.g. `ZeroDivisionError` or `mylib.BadInput`.
    pub type_name: String,
    /// `str(exception)`.
    pub message: String,
    /// The whole traceback as Python prints it.
    pub traceback: String,
    /// For a `SyntaxError` and its kin, the line of the source it points at.
    pub line: Option<u32>,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerExit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal (9 for `SIGKILL`, 11 for `SIGSEGV`, ...).
    Signal(i32),
    /// Its status could not be read.
    Unknown,
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerExit::Code(code) => write!(f, "exit code {code}"),
            WorkerExit::Signal(signal) => {
                let name = match signal {
                    6 => " (SIGABRT)",
                    9 => " (SIGKILL, e.g. the out-of-memory killer)",
                    11 => " (SIGSEGV)",
                    15 => " (SIGTERM)",
                    _ => "",
                };
                write!(f, "signal {signal}{name}")
            }
            WorkerExit::Unknown => f.write_str("unknown status"),
        }
    }
}

impl TaskError {
    fn new(kind: Kind) -> TaskError {
        TaskError {
            inner: Box::new(Inner { kind }),
        }
    }

    /// The function raised `exception`.
    pub fn python(exception: PythonException) -> TaskError {
        TaskError::new(Kind::Python(exception))
    }

    /// The function could not be loaded on the worker (a `SyntaxError` in its source, an
    /// entry point that does not exist, a pickle that does not unpickle).
    pub fn load(exception: PythonException) -> TaskError {
        TaskError::new(Kind::Load(exception))
    }

    /// The worker could not unpickle the task's arguments.
    pub fn arguments_unpickle(exception: PythonException) -> TaskError {
        TaskError::new(Kind::ArgumentsUnpickle(exception))
    }

    /// The worker could not pickle the function's return value.
    pub fn result_pickle(exception: PythonException) -> TaskError {
        TaskError::new(Kind::ResultPickle(exception))
    }

    /// An argument could not be serialized on the Rust side.
    pub fn serialize(reason: impl fmt::Display) -> TaskError {
        TaskError::new(Kind::Serialize(reason.to_string()))
    }

    /// A result could not be decoded into the Rust type that was asked for.
    pub fn decode(reason: impl fmt::Display) -> TaskError {
        TaskError::new(Kind::Decode(reason.to_string()))
    }

    /// The pickled result was `size` bytes, over the configured `limit`.
    pub fn result_too_large(size: u64, limit: u64) -> TaskError {
        TaskError::new(Kind::ResultTooLarge { size, limit })
    }

    /// The task's arguments were `size` bytes, over the configured `limit`; the task was
    /// refused before anything was sent.
    pub fn arguments_too_large(size: u64, limit: u64) -> TaskError {
        TaskError::new(Kind::ArgumentsTooLarge { size, limit })
    }

    /// The worker running the task died.
    pub fn worker_died(exit: WorkerExit) -> TaskError {
        TaskError::new(Kind::WorkerDied(exit))
    }

    /// The task ran longer than its timeout and its worker was replaced.
    pub fn timeout(after: Duration) -> TaskError {
        TaskError::new(Kind::Timeout(after))
    }

    /// The task was cancelled.
    pub fn cancelled() -> TaskError {
        TaskError::new(Kind::Cancelled)
    }

    /// The executor was shut down before the task could run.
    pub fn shutdown() -> TaskError {
        TaskError::new(Kind::Shutdown)
    }

    /// No worker could be started to run the task.
    pub fn no_workers(reason: impl fmt::Display) -> TaskError {
        TaskError::new(Kind::NoWorkers(reason.to_string()))
    }

    /// The manager (a pool of remote workers) holding the task was lost, for `reason`.
    pub fn manager_lost(reason: impl fmt::Display) -> TaskError {
        TaskError::new(Kind::ManagerLost(reason.to_string()))
    }

    /// A peer sent something that does not follow the protocol.
    pub fn protocol(reason: impl fmt::Display) -> TaskError {
        TaskError::new(Kind::Protocol(reason.to_string()))
    }

    /// The function raised an exception.
    pub fn is_python(&self) -> bool {
        matches!(self.inner.kind, Kind::Python(_))
    }

    /// The function could not be loaded (syntax error, missing entry point, bad pickle).
    pub fn is_load(&self) -> bool {
        matches!(self.inner.kind, Kind::Load(_))
    }

    /// An argument or result could not be serialized or deserialized, on either side.
    pub fn is_serialization(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::ArgumentsUnpickle(_)
                | Kind::ResultPickle(_)
                | Kind::Serialize(_)
                | Kind::Decode(_)
        )
    }

    /// The result was larger than the configured limit.
    pub fn is_result_too_large(&self) -> bool {
        matches!(self.inner.kind, Kind::ResultTooLarge { .. })
    }

    /// The arguments were larger than the configured limit (see
    /// `ExecutorBuilder::max_arguments_size`); nothing was sent.
    pub fn is_arguments_too_large(&self) -> bool {
        matches!(self.inner.kind, Kind::ArgumentsTooLarge { .. })
    }

    /// The worker running the task died (see [`TaskError::worker_exit`]).
    pub fn is_worker_died(&self) -> bool {
        matches!(self.inner.kind, Kind::WorkerDied(_))
    }

    /// The task passed its timeout.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::Timeout(_))
    }

    /// The task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.inner.kind, Kind::Cancelled)
    }

    /// The executor shut down before the task ran.
    pub fn is_shutdown(&self) -> bool {
        matches!(self.inner.kind, Kind::Shutdown)
    }

    /// No worker could be started.
    pub fn is_no_workers(&self) -> bool {
        matches!(self.inner.kind, Kind::NoWorkers(_))
    }

    /// The manager holding the task was lost (its node died, its connection dropped for
    /// good, it stopped sending heartbeats).
    pub fn is_manager_lost(&self) -> bool {
        matches!(self.inner.kind, Kind::ManagerLost(_))
    }

    /// A peer broke the protocol.
    pub fn is_protocol(&self) -> bool {
        matches!(self.inner.kind, Kind::Protocol(_))
    }

    /// The failure is the system's, not the function's: running the same task again may
    /// succeed. True for a dead worker, for workers that could not start, and for protocol
    /// errors.
    pub fn is_system(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::WorkerDied(_) | Kind::NoWorkers(_) | Kind::ManagerLost(_) | Kind::Protocol(_)
        )
    }

    /// The Python exception behind the error, for errors raised in Python (the function's own,
    /// a load failure, or an argument or result that would not (un)pickle).
    pub fn python_exception(&self) -> Option<&PythonException> {
        match &self.inner.kind {
            Kind::Python(e)
            | Kind::Load(e)
            | Kind::ArgumentsUnpickle(e)
            | Kind::ResultPickle(e) => Some(e),
            _ => None,
        }
    }

    /// How the worker ended, for [`TaskError::is_worker_died`] errors.
    pub fn worker_exit(&self) -> Option<WorkerExit> {
        match self.inner.kind {
            Kind::WorkerDied(exit) => Some(exit),
            _ => None,
        }
    }
}

/// A copy of the error, e.g. to report one failure to several waiters or to keep it for a
/// re-send.
impl Clone for TaskError {
    fn clone(&self) -> Self {
        TaskError::new(self.inner.kind.clone())
    }
}

impl fmt::Debug for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TaskError").field(&self.inner.kind).finish()
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner.kind {
            Kind::Python(e) => write!(f, "function raised {}: {}", e.type_name, e.message),
            Kind::Load(e) => {
                write!(f, "function failed to load: {}: {}", e.type_name, e.message)?;
                if let Some(line) = e.line {
                    write!(f, " (line {line})")?;
                }
                Ok(())
            }
            Kind::ArgumentsUnpickle(e) => {
                write!(
                    f,
                    "worker could not unpickle the arguments: {}: {}",
                    e.type_name, e.message
                )
            }
            Kind::ResultPickle(e) => {
                write!(
                    f,
                    "worker could not pickle the result: {}: {}",
                    e.type_name, e.message
                )
            }
            Kind::Serialize(reason) => write!(f, "could not serialize an argument: {reason}"),
            Kind::Decode(reason) => write!(f, "could not decode the result: {reason}"),
            Kind::ResultTooLarge { size, limit } => {
                write!(
                    f,
                    "result of {size} bytes is over the limit of {limit} bytes"
                )
            }
            Kind::WorkerDied(exit) => write!(f, "worker died while running the task ({exit})"),
            Kind::Timeout(after) => {
                write!(f, "task timed out after {after:?}; its worker was replaced")
            }
            Kind::Cancelled => f.write_str("task was cancelled"),
            Kind::Shutdown => f.write_str("executor was shut down before the task ran"),
            Kind::NoWorkers(reason) => write!(f, "no worker could be started: {reason}"),
            Kind::ManagerLost(reason) => {
                write!(f, "the manager running the task was lost: {reason}")
            }
            Kind::Protocol(reason) => write!(f, "protocol error: {reason}"),
            Kind::ArgumentsTooLarge { size, limit } => {
                write!(
                    f,
                    "arguments of {size} bytes are over the limit of {limit} bytes; the task was not sent"
                )
            }
        }
    }
}

impl std::error::Error for TaskError {}

/// Errors travel between processes (a manager reports a task's failure to its endpoint, a
/// gateway to its clients) with their kind and details intact.
impl Serialize for TaskError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.kind.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TaskError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Kind::deserialize(deserializer).map(TaskError::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exception() -> PythonException {
        PythonException {
            type_name: "ValueError".into(),
            message: "bad".into(),
            traceback: "Traceback ...".into(),
            line: None,
        }
    }

    #[test]
    fn families_are_exclusive() {
        let python = TaskError::python(exception());
        assert!(python.is_python() && !python.is_system() && !python.is_load());
        assert_eq!(
            python.python_exception().map(|e| e.type_name.as_str()),
            Some("ValueError")
        );

        let died = TaskError::worker_died(WorkerExit::Signal(9));
        assert!(died.is_worker_died() && died.is_system() && !died.is_python());
        assert_eq!(died.worker_exit(), Some(WorkerExit::Signal(9)));
        assert!(died.to_string().contains("SIGKILL"), "{died}");

        assert!(TaskError::decode("x").is_serialization());
        assert!(!TaskError::timeout(Duration::from_secs(1)).is_system());
    }

    #[test]
    fn load_errors_name_the_line() {
        let mut e = exception();
        e.type_name = "SyntaxError".into();
        e.line = Some(3);
        let text = TaskError::load(e).to_string();
        assert!(
            text.contains("SyntaxError") && text.contains("line 3"),
            "{text}"
        );
    }
}
