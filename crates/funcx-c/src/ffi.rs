//! The exported C functions.
//!
//! This is the only module allowed `unsafe` (the workspace forbids it; this crate denies it):
//! `#[no_mangle]` counts as unsafe, and C hands us raw pointers. Every pointer is read or
//! written in one of the small helpers at the top of this module, each with the reason it is
//! sound; the exported functions are `unsafe extern "C"` because their callers must pass
//! valid pointers, as `funcx.h` documents. `unsafe_op_in_unsafe_fn` keeps each dereference in
//! an explicit, commented block even inside them.
#![allow(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use funcx::{blocking, Args, Executor, Function, Payload, PythonConfig, PythonRuntime};

use crate::convert;
use crate::error::{FuncxError, FuncxErrorKind};

/// An executor: local Python workers, or an endpoint behind a gateway. Thread-safe.
pub struct FuncxExecutor(blocking::Executor);

/// A Python function, registered once per executor on first use. Thread-safe.
pub struct FuncxFunction(Function);

/// A submitted task. Thread-safe: one thread may wait while another cancels.
pub struct FuncxTask(blocking::TaskHandle);

/// What a wait ended with.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuncxStatus {
    /// The task finished with a result, which was written to the out-parameter.
    Ok = 0,
    /// The task is still queued or running after the timeout; wait again, or cancel it.
    Pending = 1,
    /// The task failed, or the call was invalid: see the error.
    Failed = 2,
}

// ---- The pointer helpers: every dereference of a C pointer is here. ----

/// The UTF-8 text of the C string `ptr`, or an invalid-argument error naming `what`.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for `'a`.
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, FuncxError> {
    if ptr.is_null() {
        return Err(FuncxError::invalid(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller guarantees a NUL-terminated string valid for 'a.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str()
        .map_err(|e| FuncxError::invalid(format!("{what} is not UTF-8: {e}")))
}

/// The object behind a handle from this API, or an invalid-argument error if it is NULL.
///
/// # Safety
/// `ptr` is NULL or a pointer this API returned (from `Box::into_raw`) and not yet freed.
unsafe fn object<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, FuncxError> {
    // SAFETY: the caller guarantees a live object made by this API, or NULL (`as_ref` checks).
    unsafe { ptr.as_ref() }.ok_or_else(|| FuncxError::invalid(format!("{what} is NULL")))
}

/// Frees a handle this API returned; NULL is ignored.
///
/// # Safety
/// `ptr` is NULL or a pointer this API returned and not yet freed; it is not used again.
unsafe fn free<T>(ptr: *mut T) {
    if !ptr.is_null() {
        // SAFETY: made by `Box::into_raw` in this module, and freed only once (the caller's
        // promise).
        drop(unsafe { Box::from_raw(ptr) });
    }
}

/// Stores `value` in the out-parameter `out`, if the caller gave one.
///
/// # Safety
/// `out` is NULL or valid for writing one `T`.
unsafe fn put<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: not NULL, and the caller guarantees it is writable. `write` does not read
        // (or drop) whatever uninitialised value was there.
        unsafe { out.write(value) };
    }
}

/// The `len` bytes at `data` (NULL with `len` 0 is the empty slice).
///
/// # Safety
/// `data` is valid for reading `len` bytes for `'a`.
unsafe fn bytes<'a>(data: *const u8, len: usize) -> Result<&'a [u8], FuncxError> {
    if data.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(FuncxError::invalid("data is NULL"))
        };
    }
    // SAFETY: not NULL, and the caller guarantees `len` readable bytes that live for 'a.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

// ---- The boundary: no panic crosses it, and every error reaches `error`. ----

/// Runs `body`, turning a panic into an `Internal` error.
fn guard<T>(body: impl FnOnce() -> Result<T, FuncxError>) -> Result<T, FuncxError> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(FuncxError::new(
            FuncxErrorKind::Internal,
            format!("funcx bug (please report): {what}"),
        ))
    })
}

/// The value to return to C: `outcome`'s value, or `failed` with the error stored in
/// `*error` (when the caller gave `error`).
///
/// # Safety
/// `error` is NULL or valid for writing one pointer.
unsafe fn finish<T>(outcome: Result<T, FuncxError>, error: *mut *mut FuncxError, failed: T) -> T {
    match outcome {
        Ok(value) => value,
        Err(e) => {
            // SAFETY: the caller's promise about `error`.
            unsafe { put(error, boxed(e)) };
            failed
        }
    }
}

/// Runs `body` for a function that returns nothing, swallowing a panic (there is nowhere to
/// report it; a free or a cancel has no outcome to give).
fn quietly(body: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(body));
}

fn boxed<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

// ---- Executors ----

/// Starts an executor with `workers` local Python workers (0: one per CPU), running the
/// interpreter `python` (NULL: `python3`), and waits until they are up.
///
/// Returns NULL on failure (`python` cannot start: `FUNCX_ERROR_KIND_NO_WORKERS`, with the
/// reason). Free with `funcx_executor_free`.
///
/// # Safety
/// `python` is NULL or a NUL-terminated string; `error` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn funcx_executor_new_local(
    workers: u32,
    python: *const c_char,
    error: *mut *mut FuncxError,
) -> *mut FuncxExecutor {
    let outcome = guard(|| {
        let mut config = PythonConfig::new();
        if !python.is_null() {
            // SAFETY: a NUL-terminated string (the caller's promise).
            config = config.python(unsafe { text(python, "python") }?);
        }
        let mut builder = Executor::builder();
        if workers > 0 {
            builder = builder.workers(workers as usize);
        }
        let executor = blocking::Executor::start(builder, PythonRuntime::new(config))?;
        executor.ready()?;
        Ok(boxed(FuncxExecutor(executor)))
    });
    // SAFETY: `error` is NULL or writable (the caller's promise).
    unsafe { finish(outcome, error, std::ptr::null_mut()) }
}

/// Connects to endpoint `endpoint_id` of the funcx gateway at `url` (`http://host:port`) as
/// the user whose token is `token`. Checks that the gateway answers and that the user sees
/// the endpoint (`FUNCX_ERROR_KIND_REMOTE` otherwise); the endpoint itself need not be
/// connected yet. Returns NULL on failure. Free with `funcx_executor_free`.
///
/// # Safety
/// `url`, `token` and `endpoint_id` are NUL-terminated strings; `error` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn funcx_executor_new_remote(
    url: *const c_char,
    token: *const c_char,
    endpoint_id: *const c_char,
    error: *mut *mut FuncxError,
) -> *mut FuncxExecutor {
    let outcome = guard(|| {
        // SAFETY: NUL-terminated strings (the caller's promise).
        let (url, token, endpoint_id) = unsafe {
            (
                text(url, "url")?,
                text(token, "token")?,
                text(endpoint_id, "endpoint_id")?,
            )
        };
        let executor = blocking::Executor::connect(async {
            funcx::client::connect(url, token, endpoint_id)
                .await
                .map_err(FuncxError::from)
        })?;
        Ok(boxed(FuncxExecutor(executor)))
    });
    // SAFETY: `error` is NULL or writable (the caller's promise).
    unsafe { finish(outcome, error, std::ptr::null_mut()) }
}

/// Stops accepting tasks, waits for every accepted task to finish, and stops the workers.
/// Tasks submitted afterwards fail with `FUNCX_ERROR_KIND_SHUTDOWN`. The executor must
/// still be freed.
///
/// # Safety
/// `executor` is NULL or a live executor from this API.
#[no_mangle]
pub unsafe extern "C" fn funcx_executor_shutdown(executor: *const FuncxExecutor) {
    quietly(|| {
        // SAFETY: the caller's promise about `executor`.
        if let Ok(executor) = unsafe { object(executor, "executor") } {
            executor.0.shutdown();
        }
    });
}

/// Frees an executor: cancels its unfinished tasks and stops its workers (waiting for them
/// to exit). Tasks from it stay valid (waiting on one gives `FUNCX_ERROR_KIND_CANCELLED` or
/// `_SHUTDOWN`) until freed. NULL is ignored.
///
/// # Safety
/// `executor` is NULL or a live executor from this API, not used again.
#[no_mangle]
pub unsafe extern "C" fn funcx_executor_free(executor: *mut FuncxExecutor) {
    // SAFETY: the caller's promise about `executor`.
    quietly(|| unsafe { free(executor) });
}

// ---- Functions ----

/// A Python function from its source text and the name of its entry point, e.g.
/// `"def add(a, b):\n    return a + b\n"` and `"add"`. Nothing runs yet: a source that does
/// not load fails its tasks with `FUNCX_ERROR_KIND_LOAD`. Free with `funcx_function_free`.
///
/// # Safety
/// `source` and `entry_point` are NUL-terminated strings; `error` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn funcx_function_new(
    source: *const c_char,
    entry_point: *const c_char,
    error: *mut *mut FuncxError,
) -> *mut FuncxFunction {
    let outcome = guard(|| {
        // SAFETY: NUL-terminated strings (the caller's promise).
        let (source, entry_point) =
            unsafe { (text(source, "source")?, text(entry_point, "entry_point")?) };
        Ok(boxed(FuncxFunction(Function::from_source(
            source,
            entry_point,
        ))))
    });
    // SAFETY: `error` is NULL or writable (the caller's promise).
    unsafe { finish(outcome, error, std::ptr::null_mut()) }
}

/// Frees a function. Tasks already submitted with it are not affected. NULL is ignored.
///
/// # Safety
/// `function` is NULL or a live function from this API, not used again.
#[no_mangle]
pub unsafe extern "C" fn funcx_function_free(function: *mut FuncxFunction) {
    // SAFETY: the caller's promise about `function`.
    quietly(|| unsafe { free(function) });
}

// ---- Tasks ----

/// Submits one call of `function` with `args_json`: a JSON array of positional arguments
/// (`"[2, 3]"`), or an object with `"args"` and/or `"kwargs"` (`"{\"args\": [10],
/// \"kwargs\": {\"factor\": 3}}"`). Returns at once, or NULL with
/// `FUNCX_ERROR_KIND_INVALID_ARGUMENT` for arguments that are not such JSON. Free the task
/// with `funcx_task_free`.
///
/// # Safety
/// `executor` and `function` are live objects from this API; `args_json` is a
/// NUL-terminated string; `error` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn funcx_submit_json(
    executor: *const FuncxExecutor,
    function: *const FuncxFunction,
    args_json: *const c_char,
    error: *mut *mut FuncxError,
) -> *mut FuncxTask {
    let outcome = guard(|| {
        // SAFETY: live objects from this API and a NUL-terminated string (the caller's
        // promise).
        let (executor, function, args_json) = unsafe {
            (
                object(executor, "executor")?,
                object(function, "function")?,
                text(args_json, "args_json")?,
            )
        };
        let args = convert::args_from_json(args_json)?;
        Ok(boxed(FuncxTask(executor.0.submit(&function.0, args))))
    });
    // SAFETY: `error` is NULL or writable (the caller's promise).
    unsafe { finish(outcome, error, std::ptr::null_mut()) }
}

/// Submits one call of `function` with one positional argument given as pickle bytes (a
/// numpy array pickled by Python, say): `len` bytes at `data`. Returns at once; free the
/// task with `funcx_task_free`.
///
/// # Safety
/// `executor` and `function` are live objects from this API; `data` is readable for `len`
/// bytes (or NULL when `len` is 0); `error` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn funcx_submit_pickle(
    executor: *const FuncxExecutor,
    function: *const FuncxFunction,
    data: *const u8,
    len: usize,
    error: *mut *mut FuncxError,
) -> *mut FuncxTask {
    let outcome = guard(|| {
        // SAFETY: live objects from this API and `len` readable bytes (the caller's promise).
        let (executor, function, data) = unsafe {
            (
                object(executor, "executor")?,
                object(function, "function")?,
                bytes(data, len)?,
            )
        };
        let args = Args::new().payload(Payload::from_pickled(data.to_vec()));
        Ok(boxed(FuncxTask(executor.0.submit(&function.0, args))))
    });
    // SAFETY: `error` is NULL or writable (the caller's promise).
    unsafe { finish(outcome, error, std::ptr::null_mut()) }
}

/// The wait shared by both result forms: `Ok(Some(payload))` when done, `Ok(None)` when still
/// pending, `Err` when the task failed.
fn wait(task: &FuncxTask, timeout_ms: i64) -> Result<Option<Payload>, FuncxError> {
    // Negative: no limit (a timer far in the future, which Tokio clamps).
    let timeout = u64::try_from(timeout_ms).map_or(Duration::MAX, Duration::from_millis);
    match task.0.wait_timeout(timeout) {
        None => Ok(None),
        Some(result) => Ok(Some(result?)),
    }
}

/// Waits at most `timeout_ms` milliseconds (negative: without limit) for `task`, and on
/// success stores its result as JSON text in `*result_json` (free it with
/// `funcx_string_free`).
///
/// Returns `FUNCX_STATUS_OK` with the result, `FUNCX_STATUS_PENDING` if the task has not
/// finished in time (nothing stored; wait again), or `FUNCX_STATUS_FAILED` with `*error` set:
/// the task failed (its kind and message), or the result is not JSON-shaped
/// (`FUNCX_ERROR_KIND_SERIALIZATION`: use `funcx_task_wait_pickle`). Waiting again after
/// the task finished gives the same outcome.
///
/// # Safety
/// `task` is a live task from this API; `result_json` and `error` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn funcx_task_wait_json(
    task: *const FuncxTask,
    timeout_ms: i64,
    result_json: *mut *mut c_char,
    error: *mut *mut FuncxError,
) -> FuncxStatus {
    let outcome = guard(|| {
        // SAFETY: a live task from this API (the caller's promise).
        let task = unsafe { object(task, "task") }?;
        let Some(payload) = wait(task, timeout_ms)? else {
            return Ok(FuncxStatus::Pending);
        };
        // JSON text escapes NUL inside strings, so it never contains one.
        let json = CString::new(convert::result_to_json(&payload)?).unwrap_or_default();
        // SAFETY: `result_json` is NULL or writable (the caller's promise).
        unsafe { put(result_json, json.into_raw()) };
        Ok(FuncxStatus::Ok)
    });
    // SAFETY: `error` is NULL or writable (the caller's promise).
    unsafe { finish(outcome, error, FuncxStatus::Failed) }
}

/// As `funcx_task_wait_json`, but stores the result as pickle bytes: `*data` (free it with
/// `funcx_bytes_free(data, len)`) and `*len`.
///
/// # Safety
/// `task` is a live task from this API; `data`, `len` and `error` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn funcx_task_wait_pickle(
    task: *const FuncxTask,
    timeout_ms: i64,
    data: *mut *mut u8,
    len: *mut usize,
    error: *mut *mut FuncxError,
) -> FuncxStatus {
    let outcome = guard(|| {
        // SAFETY: a live task from this API (the caller's promise).
        let task = unsafe { object(task, "task") }?;
        let Some(payload) = wait(task, timeout_ms)? else {
            return Ok(FuncxStatus::Pending);
        };
        let bytes: Box<[u8]> = payload.as_bytes().into();
        // SAFETY: `len` and `data` are NULL or writable (the caller's promise). Ownership of
        // the bytes passes to C until `funcx_bytes_free`.
        unsafe {
            put(len, bytes.len());
            put(data, Box::into_raw(bytes).cast::<u8>());
        }
        Ok(FuncxStatus::Ok)
    });
    // SAFETY: `error` is NULL or writable (the caller's promise).
    unsafe { finish(outcome, error, FuncxStatus::Failed) }
}

/// Cancels `task`: a queued task never runs; a running one has its worker killed and
/// replaced. Waiting then fails with `FUNCX_ERROR_KIND_CANCELLED`, unless the result was
/// already there. NULL is ignored.
///
/// # Safety
/// `task` is NULL or a live task from this API.
#[no_mangle]
pub unsafe extern "C" fn funcx_task_cancel(task: *const FuncxTask) {
    quietly(|| {
        // SAFETY: the caller's promise about `task`.
        if let Ok(task) = unsafe { object(task, "task") } {
            task.0.cancel();
        }
    });
}

/// The task's id (unique in this process), for logs. 0 for NULL.
///
/// # Safety
/// `task` is NULL or a live task from this API.
#[no_mangle]
pub unsafe extern "C" fn funcx_task_id(task: *const FuncxTask) -> u64 {
    let mut id = 0;
    // SAFETY: the caller's promise about `task`.
    quietly(|| id = unsafe { object(task, "task") }.map_or(0, |task| task.0.id().as_u64()));
    id
}

/// Frees a task. It is not cancelled: it still runs (call `funcx_task_cancel` first to stop
/// it). NULL is ignored.
///
/// # Safety
/// `task` is NULL or a live task from this API, not used again.
#[no_mangle]
pub unsafe extern "C" fn funcx_task_free(task: *mut FuncxTask) {
    // SAFETY: the caller's promise about `task`.
    quietly(|| unsafe { free(task) });
}

// ---- Errors and memory ----

/// The kind of `error` (`FUNCX_ERROR_KIND_INTERNAL` for NULL).
///
/// # Safety
/// `error` is NULL or a live error from this API.
#[no_mangle]
pub unsafe extern "C" fn funcx_error_kind(error: *const FuncxError) -> FuncxErrorKind {
    let mut kind = FuncxErrorKind::Internal;
    // SAFETY: the caller's promise about `error`.
    quietly(|| kind = unsafe { object(error, "error") }.map_or(kind, |e| e.kind));
    kind
}

/// The message of `error`, NUL-terminated, owned by the error: valid until
/// `funcx_error_free`. For a Python exception it holds the type, the text and the
/// traceback. NULL for NULL.
///
/// # Safety
/// `error` is NULL or a live error from this API.
#[no_mangle]
pub unsafe extern "C" fn funcx_error_message(error: *const FuncxError) -> *const c_char {
    let mut message = std::ptr::null();
    // SAFETY: the caller's promise about `error`.
    quietly(|| {
        message = unsafe { object(error, "error") }.map_or(message, |e| e.message.as_ptr());
    });
    message
}

/// Frees an error. NULL is ignored.
///
/// # Safety
/// `error` is NULL or a live error from this API, not used again.
#[no_mangle]
pub unsafe extern "C" fn funcx_error_free(error: *mut FuncxError) {
    // SAFETY: the caller's promise about `error`.
    quietly(|| unsafe { free(error) });
}

/// Frees a string from this API (a JSON result). NULL is ignored.
///
/// # Safety
/// `string` is NULL or a string this API returned, not freed before and not used again.
#[no_mangle]
pub unsafe extern "C" fn funcx_string_free(string: *mut c_char) {
    if !string.is_null() {
        // SAFETY: made by `CString::into_raw` in `funcx_task_wait_json`, freed once.
        quietly(|| drop(unsafe { CString::from_raw(string) }));
    }
}

/// Frees bytes from this API (a pickled result) of length `len`. NULL is ignored.
///
/// # Safety
/// `data` and `len` are exactly as `funcx_task_wait_pickle` returned them, not freed before.
#[no_mangle]
pub unsafe extern "C" fn funcx_bytes_free(data: *mut u8, len: usize) {
    if !data.is_null() {
        // SAFETY: made from a `Box<[u8]>` of `len` bytes in `funcx_task_wait_pickle`, freed
        // once (the caller's promise).
        quietly(|| drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, len)) }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message of an error from this API, as C reads it.
    fn message_of(error: *const FuncxError) -> String {
        // SAFETY: `error` is a live error from this API; its message is NUL-terminated and
        // lives as long as the error.
        unsafe { CStr::from_ptr(funcx_error_message(error)) }
            .to_string_lossy()
            .into_owned()
    }

    /// An entry point shaped like the exported ones (`guard` around the body, `finish` to
    /// hand the error to C) whose body panics, as a bug in funcx would. Without the guard the
    /// panic would reach the `extern "C"` boundary, where Rust aborts the whole process (the
    /// test binary included).
    unsafe extern "C" fn panicking_entry_point(
        payload: u32,
        error: *mut *mut FuncxError,
    ) -> *mut FuncxTask {
        let outcome = guard(|| -> Result<*mut FuncxTask, FuncxError> {
            match payload {
                0 => panic!("a static message"),
                1 => panic!("a formatted message: {payload}"),
                _ => std::panic::panic_any(payload),
            }
        });
        // SAFETY: `error` is NULL or writable (this function's callers, below).
        unsafe { finish(outcome, error, std::ptr::null_mut()) }
    }

    #[test]
    fn a_panic_in_an_entry_point_becomes_an_internal_error_and_the_process_goes_on() {
        // Each payload a panic can carry: a `&str`, a `String`, anything else.
        let expected = [
            "funcx bug (please report): a static message",
            "funcx bug (please report): a formatted message: 1",
            "funcx bug (please report): a panic",
        ];
        for (payload, expected) in (0u32..).zip(expected) {
            let mut error: *mut FuncxError = std::ptr::null_mut();
            // SAFETY: `error` is a writable pointer.
            let task = unsafe { panicking_entry_point(payload, &mut error) };
            assert!(task.is_null(), "a failed call returns NULL");
            assert!(!error.is_null(), "a failed call sets the error");
            // SAFETY: a live error from this API, freed once, here.
            unsafe {
                assert_eq!(funcx_error_kind(error), FuncxErrorKind::Internal);
                assert_eq!(message_of(error), expected);
                funcx_error_free(error);
            }
        }
        // Without an error out-parameter the panic is still caught: NULL, nothing written.
        // SAFETY: NULL is allowed for `error`.
        assert!(unsafe { panicking_entry_point(0, std::ptr::null_mut()) }.is_null());
    }

    #[test]
    fn guard_passes_values_and_errors_through() {
        assert_eq!(guard(|| Ok(7)).ok(), Some(7));
        let error = guard(|| -> Result<(), _> { Err(FuncxError::invalid("bad")) })
            .expect_err("the body's error");
        assert_eq!(error.kind, FuncxErrorKind::InvalidArgument);
        assert_eq!(error.message.to_str(), Ok("bad"));
    }

    #[test]
    fn quietly_swallows_a_panic_and_the_caller_goes_on() {
        let mut reached = false;
        quietly(|| {
            reached = true;
            panic!("in a free function");
        });
        // The panic stopped at `quietly`: the caller runs on, and the body's effects before
        // the panic stand.
        assert!(reached);
        let mut after = 0;
        quietly(|| after = 1);
        assert_eq!(after, 1);
    }

    #[test]
    fn errors_of_null_are_internal_with_no_message() {
        // SAFETY: NULL is allowed for both.
        unsafe {
            assert_eq!(funcx_error_kind(std::ptr::null()), FuncxErrorKind::Internal);
            assert!(funcx_error_message(std::ptr::null()).is_null());
        }
    }
}
