//! The errors C sees: a kind to branch on and a message to show.

use std::ffi::CString;

use funcx::TaskError;

/// What went wrong, for C code to branch on. The message says the rest.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncxErrorKind {
    /// A C argument was invalid: a NULL pointer, text that is not UTF-8, arguments that are
    /// not the JSON this API expects.
    InvalidArgument = 1,
    /// The function raised an exception (the message has its type, text and traceback).
    Python = 2,
    /// The function's source does not load (a `SyntaxError`, a missing import).
    Load = 3,
    /// Arguments or a result could not be converted: not picklable, or a result that JSON
    /// cannot hold (use the pickle functions for those).
    Serialization = 4,
    /// The result was larger than the workers' limit.
    ResultTooLarge = 5,
    /// The worker running the task died.
    WorkerDied = 6,
    /// The task ran longer than its timeout.
    Timeout = 7,
    /// The task was cancelled.
    Cancelled = 8,
    /// The executor was shut down.
    Shutdown = 9,
    /// No worker could start (the message says why: `python3` missing, say).
    NoWorkers = 10,
    /// The manager holding the task was lost.
    ManagerLost = 11,
    /// The gateway could not be reached, or refused (a wrong token, an unknown endpoint).
    Remote = 12,
    /// A protocol error between the parts of funcx.
    Protocol = 13,
    /// A bug in funcx (a panic, caught at the boundary); please report it.
    Internal = 14,
    /// The arguments were larger than a limit on the way (the gateway's body limit, say).
    ArgumentsTooLarge = 15,
    /// The endpoint refused a data format the task uses (a pickle where only JSON is
    /// allowed); nothing ran.
    FormatRefused = 16,
    /// The endpoint refused the task's function (not on its allow-list); nothing ran.
    FunctionRefused = 17,
    /// The task asks for more cores, GPUs or memory than any worker of the endpoint has;
    /// nothing ran.
    Unsatisfiable = 18,
}

/// An error: its kind and its message. Free it with `funcx_error_free`.
#[derive(Debug)]
pub struct FuncxError {
    pub(crate) kind: FuncxErrorKind,
    /// NUL-terminated for C; interior NULs in the text are replaced.
    pub(crate) message: CString,
}

impl FuncxError {
    pub(crate) fn new(kind: FuncxErrorKind, message: impl Into<String>) -> FuncxError {
        let message = message.into().replace('\0', "\\0");
        FuncxError {
            kind,
            message: CString::new(message).unwrap_or_default(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> FuncxError {
        FuncxError::new(FuncxErrorKind::InvalidArgument, message)
    }
}

impl From<TaskError> for FuncxError {
    fn from(error: TaskError) -> FuncxError {
        use FuncxErrorKind as K;
        let kind = if error.is_python() {
            K::Python
        } else if error.is_load() {
            K::Load
        } else if error.is_result_too_large() {
            K::ResultTooLarge
        } else if error.is_arguments_too_large() {
            K::ArgumentsTooLarge
        } else if error.is_format_refused() {
            K::FormatRefused
        } else if error.is_function_refused() {
            K::FunctionRefused
        } else if error.is_unsatisfiable() {
            K::Unsatisfiable
        } else if error.is_serialization() {
            K::Serialization
        } else if error.is_worker_died() {
            K::WorkerDied
        } else if error.is_timeout() {
            K::Timeout
        } else if error.is_cancelled() {
            K::Cancelled
        } else if error.is_shutdown() {
            K::Shutdown
        } else if error.is_no_workers() {
            K::NoWorkers
        } else if error.is_manager_lost() {
            K::ManagerLost
        } else {
            K::Protocol
        };
        // A Python error's message carries its traceback: what a C caller logs.
        let message = match error.python_exception() {
            Some(exception) => format!("{error}\n{}", exception.traceback),
            None => error.to_string(),
        };
        FuncxError::new(kind, message)
    }
}

impl From<funcx::client::RemoteError> for FuncxError {
    fn from(error: funcx::client::RemoteError) -> FuncxError {
        FuncxError::new(FuncxErrorKind::Remote, error.to_string())
    }
}

impl From<std::io::Error> for FuncxError {
    fn from(error: std::io::Error) -> FuncxError {
        FuncxError::new(
            FuncxErrorKind::Internal,
            format!("cannot start the executor's runtime: {error}"),
        )
    }
}
