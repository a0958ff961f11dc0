//! funcx from C: run Python functions on warm workers, locally or through a funcx gateway,
//! from C, C++, or anything that calls a shared library (LabVIEW, an EPICS IOC, a Tango
//! device server).
//!
//! The API is in `include/funcx.h` (generated from this crate by cbindgen; a test checks that
//! the checked-in file is current). Every function:
//!
//! - is thread-safe: an executor, a function and a task may be used from many threads at
//!   once (freeing one while another thread still uses it is, as always in C, an error);
//! - never lets a Rust panic cross into C: a panic becomes a `FUNCX_ERROR_KIND_INTERNAL`
//!   error;
//! - reports failure through an optional `FuncxError **error` out-parameter: on failure it is
//!   set to a new error (free it with `funcx_error_free`), on success it is left alone;
//! - hands out memory only with a matching free function (`funcx_executor_free`,
//!   `funcx_function_free`, `funcx_task_free`, `funcx_error_free`, `funcx_string_free`,
//!   `funcx_bytes_free`).
//!
//! Arguments go in as JSON text, a JSON array of positional arguments or an object
//! `{"args": [...], "kwargs": {...}}`, pickled here for the Python workers; results come back
//! as JSON text. Values JSON cannot carry (bytes, numpy arrays) go both ways as pickle bytes
//! (`funcx_submit_pickle`, `funcx_task_wait_pickle`).
//!
//! `examples/c/` holds a C program that uses all of it, and `examples/c/run.sh` builds and
//! runs it (under valgrind in the test command).

mod convert;
mod error;
mod ffi;

pub use error::{FuncxError, FuncxErrorKind};
pub use ffi::*;
