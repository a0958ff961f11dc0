//! How a Globus Compute task runs on an ordinary funcx worker without the gateway ever
//! unpickling anything: one fixed Python function (the *shim*) that the gateway registers as
//! a source function, whose arguments are the task's Globus-Compute-serialized strings.
//!
//! The shim imports `globus_compute_sdk.serialize.ComputeSerializer` from the workers' own
//! Python (so the SDK must be installed there; funcx's native tasks need nothing but the
//! standard library and never load it), deserializes the function and its arguments exactly
//! as a Globus Compute endpoint would, calls it, and returns a triple of strings: the status
//! (`"success"` or `"failed"`), the result serialized with the task's result serializers or
//! the remote traceback, and the worker's environment details as JSON. The gateway reads
//! that triple (plain strings, decoded with `serde-pickle`) and relays the opaque result.

use funcx_core::{Args, Function, Payload, TaskError};
use serde::Serialize;

/// The shim's entry point.
pub(crate) const SHIM_NAME: &str = "_funcx_globus_compute_task";

/// The shim's source. Deserialized functions are cached per worker by their serialized
/// form, so a warm worker deserializes each function once.
pub(crate) const SHIM_SOURCE: &str = r#"
import json as _json
import traceback as _traceback

_FUNCTIONS = {}
_STATE = {}


def _details():
    details = _STATE.get("details")
    if details is None:
        try:
            from globus_compute_sdk.sdk.utils import get_env_details
            details = get_env_details()
        except Exception:
            import platform
            details = {"os": platform.platform(), "python_version": platform.python_version()}
        details = _STATE["details"] = _json.dumps(details)
    return details


def _failure(error, skip_frames):
    tb = error.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(_traceback.format_exception(type(error), error, tb))
    return ("failed", text, _details())


def _funcx_globus_compute_task(function_code, payload, result_serializers):
    try:
        serializer = _STATE.get("serializer")
        if serializer is None:
            try:
                from globus_compute_sdk.serialize import ComputeSerializer
            except ImportError as error:
                raise RuntimeError(
                    "this worker's Python cannot import globus_compute_sdk; install it "
                    "(pip install globus-compute-sdk) in the interpreter the endpoint's "
                    "workers run"
                ) from error
            serializer = _STATE["serializer"] = ComputeSerializer()
        from globus_compute_sdk.serialize.utils import unpack_buffers

        function = _FUNCTIONS.get(function_code)
        if function is None:
            (buffer,) = unpack_buffers(function_code)
            function = serializer.deserialize(buffer)
            if len(_FUNCTIONS) >= 256:
                _FUNCTIONS.clear()
            _FUNCTIONS[function_code] = function
        args_buffer, kwargs_buffer = unpack_buffers(payload)
        args = serializer.deserialize(args_buffer)
        kwargs = serializer.deserialize(kwargs_buffer)
    except Exception as error:
        return _failure(error, 0)
    try:
        result = function(*args, **kwargs)
    except Exception as error:
        # The user's frames only: not this one.
        return _failure(error, 1)
    try:
        data = serializer.serialize_from_list(result, list(result_serializers))
    except Exception as error:
        return _failure(error, 0)
    return ("success", data, _details())
"#;

/// The shim as a funcx function (its id is the hash of its source, the same everywhere).
pub(crate) fn shim() -> Function {
    Function::from_source(SHIM_SOURCE, SHIM_NAME)
}

/// The arguments of one task: the packed function, the packed arguments, and the result
/// serializers, each pickled as Python `str` / `list[str]`.
pub(crate) fn task_args(
    function_code: &str,
    payload: &str,
    result_serializers: &[String],
) -> Result<Args, TaskError> {
    Ok(Args::new()
        .payload(pickle(&function_code)?)
        .payload(pickle(&payload)?)
        .payload(pickle(&result_serializers)?))
}

fn pickle<T: Serialize + ?Sized>(value: &T) -> Result<Payload, TaskError> {
    Payload::pickle(value)
}

/// What a Globus Compute task came to, as its clients show it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outcome {
    /// The serialized result (success) or the traceback text (failure).
    pub(crate) data: String,
    /// `None` on success; the error code (`RemoteExecutionError`, ...) on failure.
    pub(crate) error_code: Option<&'static str>,
    /// The worker's environment, as the SDK's version-mismatch warning reads it.
    pub(crate) details: serde_json::Value,
}

impl Outcome {
    /// Whether the task failed.
    pub(crate) fn is_error(&self) -> bool {
        self.error_code.is_some()
    }
}

/// Reads what the shim returned, or the funcx error the task ended with (the shim itself
/// failing, a lost worker, a timeout, a cancellation).
pub(crate) fn outcome(result: &Result<Payload, TaskError>, endpoint_id: &str) -> Outcome {
    let mut outcome = match result {
        Ok(payload) => match payload.decode::<(String, String, String)>() {
            Ok((status, data, details)) => Outcome {
                error_code: (status != "success").then_some("RemoteExecutionError"),
                data,
                details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
            },
            Err(error) => Outcome {
                data: format!("the worker returned something other than the Globus Compute shim's answer: {error}"),
                error_code: Some("InternalError"),
                details: serde_json::Value::Null,
            },
        },
        Err(error) => Outcome {
            data: match error.python_exception() {
                Some(python) if !python.traceback.is_empty() => python.traceback.clone(),
                _ => error.to_string(),
            },
            error_code: Some(if error.is_cancelled() {
                "TaskCancelled"
            } else {
                "RemoteExecutionError"
            }),
            details: serde_json::Value::Null,
        },
    };
    if let serde_json::Value::Object(details) = &mut outcome.details {
        details.insert("endpoint_id".into(), endpoint_id.into());
    }
    outcome
}
