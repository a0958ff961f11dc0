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

/// What went wrong, in full. Private: what leaves the process is a [`TaskErrorReport`], whose
/// form is documented and pinned by tests, so this enum can change freely.
#[derive(Debug, Clone)]
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
    ArgumentsTooLarge { size: u64, limit: u64 },
    FormatRefused(String),
    FunctionRefused(String),
    Unsatisfiable(String),
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

    /// The endpoint does not accept a format the task uses (a pickled argument or a pickled
    /// function where only JSON and source text are allowed); `reason` names it. Nothing of
    /// the task was sent to a worker.
    pub fn format_refused(reason: impl fmt::Display) -> TaskError {
        TaskError::new(Kind::FormatRefused(reason.to_string()))
    }

    /// The endpoint does not run the task's function (it is not on the endpoint's own
    /// allow-list); `reason` names it. Nothing of the task was sent to a worker.
    pub fn function_refused(reason: impl fmt::Display) -> TaskError {
        TaskError::new(Kind::FunctionRefused(reason.to_string()))
    }

    /// The task asks for more resources (cores, GPUs, memory) than any worker that could
    /// run it has, even idle; `reason` says what is missing. Nothing of it was run.
    pub fn unsatisfiable(reason: impl fmt::Display) -> TaskError {
        TaskError::new(Kind::Unsatisfiable(reason.to_string()))
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

    /// The endpoint refused a format the task uses (see [`TaskError::format_refused`]).
    pub fn is_format_refused(&self) -> bool {
        matches!(self.inner.kind, Kind::FormatRefused(_))
    }

    /// The endpoint refused the task's function (see [`TaskError::function_refused`]).
    pub fn is_function_refused(&self) -> bool {
        matches!(self.inner.kind, Kind::FunctionRefused(_))
    }

    /// The task asked for resources no worker of the endpoint has (see
    /// [`crate::TaskOptions::cores`]); it was never run.
    pub fn is_unsatisfiable(&self) -> bool {
        matches!(self.inner.kind, Kind::Unsatisfiable(_))
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
            Kind::FormatRefused(reason) | Kind::FunctionRefused(reason) => {
                write!(f, "the endpoint refused the task: {reason}")
            }
            Kind::Unsatisfiable(reason) => write!(f, "the task cannot be placed: {reason}"),
        }
    }
}

impl std::error::Error for TaskError {}

/// Errors travel between processes (a manager reports a task's failure to its endpoint, a
/// gateway stores it and shows it to its clients) as their [`TaskErrorReport`], with their
/// kind and details intact.
impl Serialize for TaskError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.report().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TaskError {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        TaskErrorReport::deserialize(deserializer).map(TaskError::from)
    }
}

/// What kind of failure a [`TaskError`] is, as a stable string: the `code` of its
/// [`TaskErrorReport`], in stored tasks and in the gateway's HTTP API.
///
/// | code | meaning | details in the report |
/// | --- | --- | --- |
/// | `python` | the function raised | `python` |
/// | `load` | the function could not be loaded (syntax error, missing entry point, bad pickle) | `python` |
/// | `arguments_unpickle` | the worker could not unpickle the arguments | `python` |
/// | `result_pickle` | the worker could not pickle the result | `python` |
/// | `serialize` | an argument could not be serialized on the Rust side | `reason` |
/// | `decode` | the result could not be decoded into the Rust type asked for | `reason` |
/// | `result_too_large` | the result was over the size limit | `size`, `limit` |
/// | `arguments_too_large` | the arguments were over the size limit; nothing was sent | `size`, `limit` |
/// | `worker_died` | the worker running the task died | `worker_exit` |
/// | `timeout` | the task passed its timeout | `timeout` |
/// | `cancelled` | the task was cancelled | |
/// | `shutdown` | the executor shut down before the task ran | |
/// | `no_workers` | no worker could be started | `reason` |
/// | `manager_lost` | the manager holding the task was lost | `reason` |
/// | `protocol` | a peer broke the protocol | `reason` |
/// | `format_refused` | the endpoint does not allow a format the task uses (a pickle); nothing was run | `reason` |
/// | `function_refused` | the endpoint's own allow-list does not have the task's function; nothing was run | `reason` |
/// | `unsatisfiable` | the task asks for more cores, GPUs or memory than any worker of the endpoint has; nothing was run | `reason` |
///
/// Codes are never renamed or reused; new ones may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `python`
    Python,
    /// `load`
    Load,
    /// `arguments_unpickle`
    ArgumentsUnpickle,
    /// `result_pickle`
    ResultPickle,
    /// `serialize`
    Serialize,
    /// `decode`
    Decode,
    /// `result_too_large`
    ResultTooLarge,
    /// `arguments_too_large`
    ArgumentsTooLarge,
    /// `worker_died`
    WorkerDied,
    /// `timeout`
    Timeout,
    /// `cancelled`
    Cancelled,
    /// `shutdown`
    Shutdown,
    /// `no_workers`
    NoWorkers,
    /// `manager_lost`
    ManagerLost,
    /// `protocol`
    Protocol,
    /// `format_refused`
    FormatRefused,
    /// `function_refused`
    FunctionRefused,
    /// `unsatisfiable`
    Unsatisfiable,
}

impl ErrorCode {
    /// Every code, in the order of the table above.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::Python,
        ErrorCode::Load,
        ErrorCode::ArgumentsUnpickle,
        ErrorCode::ResultPickle,
        ErrorCode::Serialize,
        ErrorCode::Decode,
        ErrorCode::ResultTooLarge,
        ErrorCode::ArgumentsTooLarge,
        ErrorCode::WorkerDied,
        ErrorCode::Timeout,
        ErrorCode::Cancelled,
        ErrorCode::Shutdown,
        ErrorCode::NoWorkers,
        ErrorCode::ManagerLost,
        ErrorCode::Protocol,
        ErrorCode::FormatRefused,
        ErrorCode::FunctionRefused,
        ErrorCode::Unsatisfiable,
    ];

    /// The code's string, e.g. `"worker_died"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Python => "python",
            ErrorCode::Load => "load",
            ErrorCode::ArgumentsUnpickle => "arguments_unpickle",
            ErrorCode::ResultPickle => "result_pickle",
            ErrorCode::Serialize => "serialize",
            ErrorCode::Decode => "decode",
            ErrorCode::ResultTooLarge => "result_too_large",
            ErrorCode::ArgumentsTooLarge => "arguments_too_large",
            ErrorCode::WorkerDied => "worker_died",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Shutdown => "shutdown",
            ErrorCode::NoWorkers => "no_workers",
            ErrorCode::ManagerLost => "manager_lost",
            ErrorCode::Protocol => "protocol",
            ErrorCode::FormatRefused => "format_refused",
            ErrorCode::FunctionRefused => "function_refused",
            ErrorCode::Unsatisfiable => "unsatisfiable",
        }
    }

    /// The code whose string is `code`, if there is one.
    pub fn from_code(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|known| known.as_str() == code)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string in every serde format, postcard included: stored data never depends on the
/// order of the variants.
impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        ErrorCode::from_code(&code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown task error code `{code}`")))
    }
}

/// The public, stable form of a [`TaskError`]: what a gateway stores and what its HTTP API
/// shows (`"error"` of a task), and how errors travel between processes.
///
/// In JSON (every field is always present, `null` when it does not apply to the code):
///
/// ```json
/// {"code": "worker_died", "message": "worker died while running the task (signal 9 (SIGKILL, e.g. the out-of-memory killer))",
///  "python": null, "worker_exit": {"signal": 9}, "reason": null, "size": null, "limit": null, "timeout": null}
/// ```
///
/// `code` says what happened ([`ErrorCode`]); `message` is the error's text for people (it
/// may be reworded between versions: match on `code`); the other fields are the details the
/// code's row in [`ErrorCode`]'s table names: `python` a [`PythonException`], `worker_exit`
/// a [`WorkerExit`] (`{"code": 3}`, `{"signal": 9}` or `"unknown"`), `reason` a text, `size`
/// and `limit` bytes, `timeout` `{"secs": .., "nanos": ..}`.
///
/// ```
/// use funcx_core::{ErrorCode, TaskError, TaskErrorReport};
///
/// let report = TaskError::cancelled().report();
/// assert_eq!(report.code, ErrorCode::Cancelled);
/// assert!(TaskError::from(report).is_cancelled());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskErrorReport {
    /// What kind of failure.
    pub code: ErrorCode,
    /// The error as text, for people.
    pub message: String,
    /// The Python exception, for `python`, `load`, `arguments_unpickle`, `result_pickle`.
    pub python: Option<PythonException>,
    /// How the worker ended, for `worker_died`.
    pub worker_exit: Option<WorkerExit>,
    /// Why, for `serialize`, `decode`, `no_workers`, `manager_lost`, `protocol`,
    /// `format_refused`, `function_refused`, `unsatisfiable`.
    pub reason: Option<String>,
    /// The size in bytes, for `result_too_large` and `arguments_too_large`.
    pub size: Option<u64>,
    /// The limit in bytes, for `result_too_large` and `arguments_too_large`.
    pub limit: Option<u64>,
    /// The timeout passed, for `timeout`.
    pub timeout: Option<Duration>,
}

impl TaskError {
    /// What kind of failure this is, as a stable code.
    pub fn code(&self) -> ErrorCode {
        match &self.inner.kind {
            Kind::Python(_) => ErrorCode::Python,
            Kind::Load(_) => ErrorCode::Load,
            Kind::ArgumentsUnpickle(_) => ErrorCode::ArgumentsUnpickle,
            Kind::ResultPickle(_) => ErrorCode::ResultPickle,
            Kind::Serialize(_) => ErrorCode::Serialize,
            Kind::Decode(_) => ErrorCode::Decode,
            Kind::ResultTooLarge { .. } => ErrorCode::ResultTooLarge,
            Kind::ArgumentsTooLarge { .. } => ErrorCode::ArgumentsTooLarge,
            Kind::WorkerDied(_) => ErrorCode::WorkerDied,
            Kind::Timeout(_) => ErrorCode::Timeout,
            Kind::Cancelled => ErrorCode::Cancelled,
            Kind::Shutdown => ErrorCode::Shutdown,
            Kind::NoWorkers(_) => ErrorCode::NoWorkers,
            Kind::ManagerLost(_) => ErrorCode::ManagerLost,
            Kind::Protocol(_) => ErrorCode::Protocol,
            Kind::FormatRefused(_) => ErrorCode::FormatRefused,
            Kind::FunctionRefused(_) => ErrorCode::FunctionRefused,
            Kind::Unsatisfiable(_) => ErrorCode::Unsatisfiable,
        }
    }

    /// The error's public, stable form (see [`TaskErrorReport`]).
    pub fn report(&self) -> TaskErrorReport {
        let mut report = TaskErrorReport {
            code: self.code(),
            message: self.to_string(),
            python: self.python_exception().cloned(),
            worker_exit: self.worker_exit(),
            reason: None,
            size: None,
            limit: None,
            timeout: None,
        };
        match &self.inner.kind {
            Kind::Serialize(reason)
            | Kind::Decode(reason)
            | Kind::NoWorkers(reason)
            | Kind::ManagerLost(reason)
            | Kind::Protocol(reason)
            | Kind::FormatRefused(reason)
            | Kind::FunctionRefused(reason)
            | Kind::Unsatisfiable(reason) => report.reason = Some(reason.clone()),
            Kind::ResultTooLarge { size, limit } | Kind::ArgumentsTooLarge { size, limit } => {
                report.size = Some(*size);
                report.limit = Some(*limit);
            }
            Kind::Timeout(after) => report.timeout = Some(*after),
            _ => {}
        }
        report
    }
}

/// The error a report describes. A detail the code needs but the report lacks (a report
/// written by hand, say) is filled in from `message`, or with zero, rather than refused.
impl From<TaskErrorReport> for TaskError {
    fn from(report: TaskErrorReport) -> TaskError {
        let TaskErrorReport {
            code,
            message,
            python,
            worker_exit,
            reason,
            size,
            limit,
            timeout,
        } = report;
        let python = || {
            python.clone().unwrap_or_else(|| PythonException {
                type_name: String::new(),
                message: message.clone(),
                traceback: String::new(),
                line: None,
            })
        };
        let reason = || reason.clone().unwrap_or_else(|| message.clone());
        let (size, limit) = (size.unwrap_or_default(), limit.unwrap_or_default());
        TaskError::new(match code {
            ErrorCode::Python => Kind::Python(python()),
            ErrorCode::Load => Kind::Load(python()),
            ErrorCode::ArgumentsUnpickle => Kind::ArgumentsUnpickle(python()),
            ErrorCode::ResultPickle => Kind::ResultPickle(python()),
            ErrorCode::Serialize => Kind::Serialize(reason()),
            ErrorCode::Decode => Kind::Decode(reason()),
            ErrorCode::ResultTooLarge => Kind::ResultTooLarge { size, limit },
            ErrorCode::ArgumentsTooLarge => Kind::ArgumentsTooLarge { size, limit },
            ErrorCode::WorkerDied => Kind::WorkerDied(worker_exit.unwrap_or(WorkerExit::Unknown)),
            ErrorCode::Timeout => Kind::Timeout(timeout.unwrap_or_default()),
            ErrorCode::Cancelled => Kind::Cancelled,
            ErrorCode::Shutdown => Kind::Shutdown,
            ErrorCode::NoWorkers => Kind::NoWorkers(reason()),
            ErrorCode::ManagerLost => Kind::ManagerLost(reason()),
            ErrorCode::Protocol => Kind::Protocol(reason()),
            ErrorCode::FormatRefused => Kind::FormatRefused(reason()),
            ErrorCode::FunctionRefused => Kind::FunctionRefused(reason()),
            ErrorCode::Unsatisfiable => Kind::Unsatisfiable(reason()),
        })
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
